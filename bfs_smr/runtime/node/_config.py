"""A node's configuration: one frozen record, its defaults set here and nowhere else.

The command line (``bfs-smr node``) maps its flags onto :class:`NodeConfig` and takes
each flag's default from it; the channel limits' defaults are the core's
(:class:`bfs_smr.ChannelLimits`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from bfs_smr._errors import LocalError
from bfs_smr._limits import ChannelLimits
from bfs_smr.plugins import load_app
from bfs_smr.runtime.node._control import MAX_CONNECTIONS as MAX_CONTROL_CONNECTIONS
from bfs_smr.runtime.store._datadir import parse_hostport
from bfs_smr.runtime.transport import TransportConfig

__all__ = [
    "ACCEPT_APPS",
    "MAX_CHANNELS_PER_PEER",
    "MAX_CONTROL_CONNECTIONS",
    "MAX_STRANGER_LINKS",
    "MAX_WINDOW",
    "POLL_INTERVAL",
    "NodeConfig",
    "is_loopback",
]

#: Seconds between looks at the L1, unless told otherwise.
POLL_INTERVAL = 0.2
#: Channels one peer may open with this node, unless told otherwise.
MAX_CHANNELS_PER_PEER = 10_000
#: The longest challenge window a node accepts in a channel a peer opens, unless told
#: otherwise: a longer one would let the opener lock this node's deposit for that long.
MAX_WINDOW = 30 * 86_400
#: The apps a node runs in channels others open, unless told otherwise: in a payments
#: channel that it deposits nothing into, a node can only be paid.
ACCEPT_APPS = frozenset({"payments"})
#: Links from strangers (peers that hold no channel with this node, and that it never
#: dialled) kept at once, unless told otherwise; a new one evicts the oldest. Identities
#: cost nothing to make: without a bound, anyone could hold the node's sockets with links
#: that never carry a channel. Peers with channels are not counted.
MAX_STRANGER_LINKS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node runs: where it listens, its L1, its limits and its inbound policy.

    Attributes:
        listen: ``HOST:PORT`` to accept peers on (port 0: any free port).
        l1: the L1 spec, as given to ``--l1``.
        allow: if given, only these node ids may connect (the nodes this node dials
            are always allowed) and open channels.
        poll_interval: seconds between looks at the L1.
        limits: each channel's in-flight, batch and queue limits.
        max_channels_per_peer: channels a peer may open with this node (each costs disk
            and memory even without a deposit).
        window: the challenge window of the channels this node opens, and the least it
            accepts (None: the L1's).
        max_window: the longest challenge window it accepts in a channel a peer opens.
        max_inbound_deposit: the most it deposits into a channel a peer opens.
        accept_apps: the apps it runs in channels peers open.
        max_control_connections: control connections served at once (see
            :func:`bfs_smr.runtime.node._control.serve_control`).
        max_stranger_links: links kept at once from peers without a channel with this
            node (see :data:`MAX_STRANGER_LINKS`).
        transport: the links' handshake timeout, frame size, handshake caps and keepalive
            (:class:`bfs_smr.runtime.transport.TransportConfig`).
        towers: the watchtowers this node keeps up to date for all its channels, as
            ``(tower id, "HOST:PORT")`` (docs/watchtower.md).
        http: ``HOST:PORT`` to serve the HTTP API, the event stream, the metrics and the
            page on (None: no HTTP; port 0: any free port; docs/http-api.md).
        http_allow_remote: serve HTTP on a host other than a loopback address (the
            token then crosses the network in clear unless a TLS proxy is in front).

    Raises:
        LocalError: a bad option (a malformed address, an unknown app, a limit out of
            range), worded as the command line's flags.
    """

    listen: str
    l1: str
    allow: frozenset[bytes] | None = None
    poll_interval: float = POLL_INTERVAL
    limits: ChannelLimits = field(default_factory=ChannelLimits)
    max_channels_per_peer: int = MAX_CHANNELS_PER_PEER
    window: int | None = None
    max_window: int = MAX_WINDOW
    max_inbound_deposit: int = 0
    accept_apps: frozenset[str] = ACCEPT_APPS
    max_control_connections: int = MAX_CONTROL_CONNECTIONS
    max_stranger_links: int = MAX_STRANGER_LINKS
    transport: TransportConfig = field(default_factory=TransportConfig)
    towers: tuple[tuple[bytes, str], ...] = ()
    http: str | None = None
    http_allow_remote: bool = False

    def __post_init__(self) -> None:
        parse_hostport(self.listen)
        # Sets given as any iterable are kept as frozensets (the record stays immutable).
        if self.allow is not None:
            object.__setattr__(self, "allow", frozenset(self.allow))
        object.__setattr__(self, "accept_apps", frozenset(self.accept_apps))
        if self.window is not None and self.window > self.max_window:
            raise LocalError(f"--window {self.window} is over --max-window {self.max_window}")
        if self.max_inbound_deposit < 0:
            raise LocalError("--max-inbound-deposit must not be negative")
        for name in self.accept_apps:
            load_app(name)  # an unknown app is a typo: say so now, not at the first open
        if self.max_control_connections < 1:
            raise LocalError("--max-control-connections must be at least 1")
        if self.max_stranger_links < 1:
            raise LocalError("--max-stranger-links must be at least 1")
        object.__setattr__(self, "towers", tuple(self.towers))
        for _tower_id, address in self.towers:
            parse_hostport(address)
        if len({t for t, _ in self.towers}) != len(self.towers):
            raise LocalError("--tower names the same tower twice")
        if self.http is not None:
            host, _ = parse_hostport(self.http)
            if not self.http_allow_remote and not is_loopback(host):
                raise LocalError(
                    f"--http {self.http} is not a loopback address (127.0.0.1, ::1, "
                    "localhost); give --http-allow-remote to serve the API to the network"
                )

    @property
    def http_address(self) -> tuple[str, int] | None:
        """:attr:`http` as ``(host, port)``, or None."""
        return None if self.http is None else parse_hostport(self.http)

    @property
    def listen_address(self) -> tuple[str, int]:
        """:attr:`listen` as ``(host, port)``."""
        return parse_hostport(self.listen)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere
