"""The transport's tunable limits: the single place their defaults are set."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bfs_smr._errors import LocalError

from ._primitives import _ABYTES, _MAX_WIRE

__all__ = ["KEEPALIVE", "MAX_FRAME", "MAX_HANDSHAKES", "MAX_HANDSHAKES_PER_HOST", "TransportConfig"]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Timeouts and bounds of :func:`dial`, :func:`serve` and :class:`SecureSession`.

    Pass one as ``config=``; ``None`` means these defaults. Both ends of a link must use the
    same ``max_frame``.

    Attributes:
        handshake_timeout: seconds for connecting and the whole handshake together
            (:func:`serve`: from accepting the connection); also how long a closing link
            may take to flush what it still has to send before it is cut off.
        max_frame: the largest application payload of one frame, in bytes. A peer's frame
            declaring more is refused from its four length bytes alone.
        max_handshakes: the most handshakes :func:`serve` runs at once; a connection
            beyond it is refused at once (established links do not count).
        max_handshakes_per_host: the same, for connections from one peer address, so one
            host cannot take all of ``max_handshakes``.
        keepalive: TCP keepalive on every connection: idle seconds, probe interval,
            probes. A peer that vanished without closing (power cut, network gone) is
            noticed after about a minute with the defaults.

    Raises:
        LocalError: a value out of range (a timeout that is not a positive number, a
            ``max_frame`` a 4-byte length cannot carry, a bound below 1).
    """

    handshake_timeout: float = 5.0
    max_frame: int = 4 * 1024 * 1024
    max_handshakes: int = 256
    max_handshakes_per_host: int = 64
    keepalive: tuple[int, int, int] = (30, 10, 3)

    def __post_init__(self) -> None:
        timeout = self.handshake_timeout
        if type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout <= 0:
            raise LocalError(f"handshake_timeout must be a positive number, not {timeout!r}")
        limit = _MAX_WIRE - _ABYTES
        if type(self.max_frame) is not int or not 0 <= self.max_frame <= limit:
            raise LocalError(f"max_frame must be between 0 and {limit}, not {self.max_frame!r}")
        for name in ("max_handshakes", "max_handshakes_per_host"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LocalError(f"{name} must be an integer of at least 1, not {value!r}")
        keepalive = self.keepalive
        if (
            type(keepalive) is not tuple
            or len(keepalive) != 3
            or not all(type(v) is int and v >= 1 for v in keepalive)
        ):
            raise LocalError(
                "keepalive is (idle seconds, probe interval, probes), "
                f"three integers of at least 1, not {keepalive!r}"
            )


_DEFAULT = TransportConfig()


def _resolve(config: TransportConfig | None) -> TransportConfig:
    """``config``, or the defaults for ``None``."""
    if config is None:
        return _DEFAULT
    if not isinstance(config, TransportConfig):
        raise LocalError(f"config must be a TransportConfig, not {type(config).__name__}")
    return config


MAX_FRAME = _DEFAULT.max_frame
"""Default largest application payload of one frame, in bytes."""
MAX_HANDSHAKES = _DEFAULT.max_handshakes
"""Default most handshakes :func:`serve` runs at once; more connections are refused."""
MAX_HANDSHAKES_PER_HOST = _DEFAULT.max_handshakes_per_host
"""Default most handshakes :func:`serve` runs at once for one peer address."""
KEEPALIVE = _DEFAULT.keepalive
"""Default TCP keepalive on every connection: idle seconds, probe interval, probes."""
