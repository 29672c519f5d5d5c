"""The channel node: one asyncio daemon per party, hosting many channels with many peers.

A node owns a data directory (:mod:`bfs_smr.runtime.store._datadir`): its identity, its durable
store, and its control secret. :class:`Node` starts and stops the parts that do the work,
each in its own module:

- :mod:`._links`: listens for peers and dials them over the authenticated, encrypted
  transport, one link per peer, re-dialled with backoff, each (re)connect followed by a
  resync of every channel on it; routes channel frames to their channel and answers node
  messages (:mod:`._nodemsg`);
- :mod:`._effects`: carries out each sans-IO :class:`bfs_smr.Channel`'s effects with the
  write-ahead rule (persist, then send, then report), several channels per fsync;
- :mod:`._watcher`: watches the L1 for its channels and does there what the pure L1 policy
  says: funds them, refutes a stale unilateral close, settles when a window ends, submits
  cooperative closes, forces moves;
- :mod:`._inbound`: the policy for channels peers open with it;
- :mod:`._ops`: the operations the command line asks for through the local control
  endpoint (:mod:`._control`), as one explicit table;
- :mod:`._towers`: keeps each watchtower given with ``--tower`` up to date with every
  channel's newest doubly-signed update, in the background (docs/watchtower.md);
- :mod:`._http`: with ``--http``, the HTTP API over the same operations, the live event
  stream fed by :mod:`._events`, and the metrics of :mod:`._metrics` (docs/http-api.md).

Its configuration is one :class:`NodeConfig` (:mod:`._config`). Blocking L1 calls run in
one worker thread (:mod:`._tasks`); everything else, including the store, runs on the
event loop, so each channel's steps happen in order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bfs_smr._crypto import Signer
from bfs_smr._errors import LocalError
from bfs_smr._messages import CommandCommitted
from bfs_smr.plugins import L1Connection, connect_l1
from bfs_smr.runtime import transport
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import ChannelLoader, NodeChannel, fail_all
from bfs_smr.runtime.node._config import NodeConfig
from bfs_smr.runtime.node._control import serve_control
from bfs_smr.runtime.node._effects import EffectExecutor
from bfs_smr.runtime.node._events import EventHub
from bfs_smr.runtime.node._http import HttpApi
from bfs_smr.runtime.node._inbound import InboundPolicy
from bfs_smr.runtime.node._links import PeerLinks
from bfs_smr.runtime.node._metrics import NodeMetrics
from bfs_smr.runtime.node._ops import ControlOps, Handler
from bfs_smr.runtime.node._tasks import Background, L1Thread
from bfs_smr.runtime.node._towers import TowerClient
from bfs_smr.runtime.node._watcher import L1Watcher
from bfs_smr.runtime.store import Store
from bfs_smr.runtime.store._datadir import DataDir

__all__ = ["Node", "NodeConfig"]

_log = get_logger("bfs_smr.node")


class Node:
    """A bfs-smr node.

    Args:
        data_dir: made with ``bfs-smr init``.
        config: where it listens, its L1, its limits and its inbound policy.

    Attributes (once :meth:`run` has started it):
        node_id: its identity on links.
        port: the port it accepts peers on.
        http_address: where its HTTP API is served, ``(host, port)`` (None: not served).
        hub: its event hub (what the event stream tells).
        metrics: its metrics.
        l1: its L1.
        account: the key it signs channel updates with (its account on the L1).
    """

    def __init__(self, data_dir: Path | str, config: NodeConfig) -> None:
        self.config = config
        self.dir = DataDir(data_dir)
        self.listen = config.listen_address
        self.signer = self.dir.identity()  # the transport identity; see also chan_signer
        self.node_id = self.signer.public_key
        self.chans: dict[bytes, NodeChannel] = {}
        self.links: dict[bytes, transport.Link] = {}
        self._stopping = asyncio.Event()
        self._background = Background(self.stop)
        self._thread = L1Thread()
        self._ops: dict[str, Handler] = {}
        self.port = 0
        self.l1: L1Connection
        self.store: Store
        self.chan_signer: Signer
        self.account = b""
        self._watcher: L1Watcher
        self.towers: list[TowerClient] = []
        self.hub = EventHub()
        self.metrics = NodeMetrics(lambda: len(self.links))
        self.http_address: tuple[str, int] | None = None
        self._describer: ControlOps | None = None
        self._phases: dict[bytes, tuple[str, str | None]] = {}

    def stop(self) -> None:
        """Ask the node to shut down gracefully (safe from a signal handler)."""
        self._stopping.set()

    async def run(self, ready: Callable[[Node], None] | None = None) -> None:
        """Run until :meth:`stop`."""
        self.dir.lock()
        try:
            await self._run(ready)
        finally:
            self.dir.unlock()

    async def control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Carry out the control operation ``op`` (see :mod:`._ops`) with ``args``.

        Raises:
            LocalError: no such operation, or a bad argument.
            BfsSmrError: the operation failed (the message says why).
        """
        handler = self._ops.get(op)
        if handler is None:
            raise LocalError(f"unknown op {op!r}")
        return await handler(args)

    async def op_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """``control("open", args)``: open a channel (for callers in this process)."""
        return await self.control("open", args)

    async def op_close(self, args: dict[str, Any]) -> dict[str, Any]:
        """``control("close", args)``: close a channel (for callers in this process)."""
        return await self.control("close", args)

    async def _run(self, ready: Callable[[Node], None] | None) -> None:
        config = self.config
        self.l1 = await self._thread.call(
            connect_l1, config.l1, self.signer, self.dir.l1_key, config.window
        )
        # Channel updates are signed with the L1's scheme: the identity on a local L1,
        # the secp256k1 key on the EVM. Its public key is this node's channel account.
        self.chan_signer = self.l1.signer
        self.account = self.chan_signer.public_key
        if self.l1.window > config.max_window:
            raise LocalError(
                f"the challenge window of this node's channels ({self.l1.window} s, the "
                f"L1's or --window) is over --max-window ({config.max_window} s)"
            )
        # Never a new store here: ``init`` made it, and a missing or empty one is a loss.
        self.store = Store(self.dir.path, create=False)
        self.store.on_commit = self.metrics.store_commit
        addresses = dict(self.store.peer_addresses())
        load = ChannelLoader(
            self.chans, self.store, self.l1, self.chan_signer, config.limits, identity=self.signer
        )
        links = self._assemble(load, addresses)
        for cid in self.store.channel_ids():
            load(cid)
        for c in self.chans.values():
            self._phases[c.cid] = _phase_of(c)
        load.loaded = self._appeared
        host, port = self.listen
        try:
            server = await links.serve(host, port)
        except OSError as exc:
            self.store.close()
            raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = server.sockets[0].getsockname()[1]
        self._describer = ControlOps(
            node_id=self.node_id,
            listen=f"{host}:{self.port}",
            l1_spec=config.l1,
            l1=self.l1,
            thread=self._thread,
            chans=self.chans,
            links=links,
            addresses=addresses,
            store=self.store,
            load=load,
            effects=links.effects,
            watcher=self._watcher,
            signer=self.chan_signer,
            towers=self.towers,
        )
        self._ops = self._describer.table()
        control = await serve_control(
            self.dir.secret(),
            self.control,
            max_connections=config.max_control_connections,
            refused=self.metrics.refused,
        )
        try:
            http = await self._serve_http()
        except BaseException:
            control.close()
            server.close()
            self.store.close()
            raise
        self.dir.write_control(
            {
                "pid": os.getpid(),
                "port": control.sockets[0].getsockname()[1],
                "listen": f"{host}:{self.port}",
                "node_id": self.node_id.hex(),
                "l1": config.l1,
                "account": self.account.hex(),
                "http": None if self.http_address is None else _hostport(*self.http_address),
            }
        )
        _log.info(
            "node started",
            node_id=self.node_id.hex(),
            listen=f"{host}:{self.port}",
            l1=config.l1,
            channels=len(self.chans),
        )
        self._background.spawn(self._watcher.watch(), guards_funds=True)
        for client in self.towers:
            self._background.spawn(client.run())
        for peer in {c.peer for c in self.chans.values() if c.payouts is None}:
            links.ensure_dialer(peer)
        if ready is not None:
            ready(self)
        try:
            await self._stopping.wait()
        finally:
            _log.info("node stopping")
            self.dir.remove_control()
            control.close()
            server.close()
            if http is not None:
                await http.close()
            await asyncio.gather(links.close(), self._background.cancel())
            for c in self.chans.values():
                fail_all(c, "the node shut down")
            self._thread.shutdown()
            self.store.close()
            _log.info("node stopped")

    def _assemble(self, load: ChannelLoader, addresses: dict[bytes, str]) -> PeerLinks:
        """Make the parts that work on the open store and L1; returns the peer links."""
        config = self.config
        self.towers = [
            TowerClient(
                tower_id,
                address,
                self.signer,
                self.chans,
                secret_of=_watch_of,
                transport_config=config.transport,
            )
            for tower_id, address in config.towers
        ]
        effects = EffectExecutor(
            self.store,
            self.links,
            l1_due=self._l1_due,
            stop=self.stop,
            committed=self._committed,
        )
        self._watcher = L1Watcher(
            self.l1,
            self._thread,
            self.chans,
            flush=effects.flush,
            background=self._background,
            poll_interval=config.poll_interval,
            changed=self._l1_changed,
            submitted=self.metrics.l1_transaction,
        )
        inbound = InboundPolicy(
            config,
            self.l1,
            self._thread,
            self.chans,
            store=self.store,
            load=load,
            signer=self.chan_signer,
            refused=lambda: self.metrics.refused("peer_open"),
        )
        return PeerLinks(
            self.signer,
            self.chans,
            self.links,
            addresses,
            account=self.account,
            domain=self.l1.adapter.format.domain,
            account_size=self.chan_signer.scheme.public_key_size,
            allow=config.allow,
            max_stranger_links=config.max_stranger_links,
            transport_config=config.transport,
            effects=effects,
            background=self._background,
            answer_open=inbound.answer,
            stopping=self._stopping,
            refused=self.metrics.refused,
        )

    async def _serve_http(self) -> HttpApi | None:
        """Serve the HTTP API if the configuration asks for it."""
        address = self.config.http_address
        if address is None:
            return None
        api = HttpApi(
            control=self.control,
            chans=self.chans,
            hub=self.hub,
            metrics=self.metrics,
            token=self.dir.api_token(),
            spawn=self._background.spawn,
        )
        try:
            self.http_address = await api.start(*address)
        except OSError as exc:
            raise LocalError(
                f"cannot serve HTTP on {_hostport(*address)}: {exc.strerror or exc}"
            ) from None
        _log.info("HTTP API served", http=_hostport(*self.http_address))
        return api

    def _committed(self, c: NodeChannel, commands: list[CommandCommitted]) -> None:
        """A channel's newest doubly-signed update changed (durable, its effects carried
        out): its towers get it, later; the event stream and the metrics now."""
        for client in self.towers:
            client.committed(c)
        newest = c.chan.committed
        assert newest is not None
        self.metrics.updates.inc(1 if c.told_seq < 0 else max(1, newest.seq - c.told_seq))
        self.metrics.commands.inc(len(commands))
        self.hub.publish("update", lambda: self._update_event(c, commands))
        self._phase_changed(c)

    def _update_event(self, c: NodeChannel, commands: list[CommandCommitted]) -> dict[str, Any]:
        newest = c.chan.committed
        assert newest is not None and self._describer is not None
        mine = any(e.local for e in commands)
        theirs = any(not e.local for e in commands)
        return {
            "channel": c.cid.hex(),
            "seq": newest.seq,
            "outcome": self._describer.by_node(c, newest.update.outcome),
            "by": "me" if mine and not theirs else "peer" if theirs and not mine else "both",
            "commands": len(commands),
        }

    def _l1_changed(self, c: NodeChannel) -> None:
        """The watcher read a change of the channel on L1."""
        self.hub.publish("l1", lambda: self._l1_event(c))
        self._phase_changed(c)

    def _l1_event(self, c: NodeChannel) -> dict[str, Any]:
        assert self._describer is not None
        return {
            "channel": c.cid.hex(),
            "status": c.l1_text,
            "deadline": c.l1_deadline,
            "registered_seq": c.l1_registered,
            "payouts": None if c.payouts is None else self._describer.by_node(c, c.payouts),
        }

    def _appeared(self, c: NodeChannel) -> None:
        """A new channel (opened by this node or its peer) was loaded."""
        self._phases.pop(c.cid, None)
        self._phase_changed(c)

    def _phase_changed(self, c: NodeChannel) -> None:
        """Tell the event stream of a new channel, or of a channel's new phase."""
        phase = _phase_of(c)
        if self._phases.get(c.cid) != phase:
            self._phases[c.cid] = phase
            describer = self._describer
            if describer is not None:
                self.hub.publish("channel", lambda: describer.describe(c))

    def _l1_due(self, c: NodeChannel) -> None:
        """A channel has something to do on L1 now (the effects say so)."""
        self._watcher.react_soon(c)


def _watch_of(c: NodeChannel) -> bytes | None:
    return c.watch


def _phase_of(c: NodeChannel) -> tuple[str, str | None]:
    phase = c.chan.phase.value, None if c.l1_status is None else c.l1_status.value
    return _PHASES.setdefault(phase, phase)  # one tuple for each pair, not one per channel


_PHASES: dict[tuple[str, str | None], tuple[str, str | None]] = {}


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
