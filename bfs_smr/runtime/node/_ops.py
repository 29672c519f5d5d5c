"""The node's control operations: what ``bfs-smr channel …`` asks of a running node.

:meth:`ControlOps.table` names every operation the control endpoint
(:mod:`._control`) serves, with its handler: ``status``, ``open``, ``send``, ``pay``,
``show``, ``list``, ``close`` and ``bench``. A handler takes the request's arguments
(plain data from a client that knew the control secret, still checked here) and returns
a JSON-able result, or raises a ``BfsSmrError`` whose message is the client's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bfs_smr._app import plain_json
from bfs_smr._channel import Phase
from bfs_smr._codec import check_plain, decode
from bfs_smr._crypto import Signer
from bfs_smr._errors import BfsSmrError, CodecError, L1Error, LocalError
from bfs_smr._l1 import L1ChannelInfo, L1ChannelStatus
from bfs_smr._update import ChannelParams, SignedUpdate
from bfs_smr.plugins import L1Connection
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import ChannelLoader, NodeChannel, check_app, wait
from bfs_smr.runtime.node._effects import EffectExecutor
from bfs_smr.runtime.node._links import PeerLinks
from bfs_smr.runtime.node._nodemsg import open_frame, parse_node_message
from bfs_smr.runtime.node._tasks import L1Thread
from bfs_smr.runtime.node._towers import TowerClient
from bfs_smr.runtime.node._watcher import L1Watcher
from bfs_smr.runtime.store import Store
from bfs_smr.runtime.store._datadir import parse_hex_id, parse_hostport

__all__ = ["MAX_BATCH", "ControlOps", "Handler"]

#: Most copies one ``channel pay --count`` / ``send --count`` puts in one update.
MAX_BATCH = 10_000

_log = get_logger("bfs_smr.node")

#: One control operation: the request's arguments → the result.
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlOps:
    """The control operations of one running node.

    Args:
        node_id: the node's identity.
        listen: where it accepts peers (``HOST:PORT``, the port bound).
        l1_spec: its ``--l1`` text.
        l1: its L1.
        thread: the thread L1 calls run in.
        chans: its channels by id.
        links: its peer links.
        addresses: where to dial each peer it dials (an open adds the peer's).
        store: its store.
        load: loads a channel into ``chans``.
        effects: carries out channels' effects.
        watcher: its L1 watcher.
        signer: the key it signs channel updates with (its account).
    """

    def __init__(
        self,
        *,
        node_id: bytes,
        listen: str,
        l1_spec: str,
        l1: L1Connection,
        thread: L1Thread,
        chans: dict[bytes, NodeChannel],
        links: PeerLinks,
        addresses: dict[bytes, str],
        store: Store,
        load: ChannelLoader,
        effects: EffectExecutor,
        watcher: L1Watcher,
        signer: Signer,
        towers: Sequence[TowerClient] = (),
    ) -> None:
        self.node_id = node_id
        self.listen = listen
        self._bad_views: dict[bytes, int] = {}  # channel -> the seq its view failed at
        self.l1_spec = l1_spec
        self.l1 = l1
        self.thread = thread
        self.chans = chans
        self.links = links
        self.addresses = addresses
        self.store = store
        self.load = load
        self.effects = effects
        self.watcher = watcher
        self.signer = signer
        self.account = signer.public_key
        self.towers = towers

    def table(self) -> dict[str, Handler]:
        """Every operation the control endpoint serves, by name."""
        return {
            "status": self.status,
            "open": self.open,
            "send": self.send,
            "pay": self.pay,
            "show": self.show,
            "list": self.list_channels,
            "close": self.close,
            "bench": self.bench,
        }

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "node_id": self.node_id.hex(),
            "listen": self.listen,
            "l1": self.l1_spec,
            "account": self.account.hex(),
            "channels": len(self.chans),
            "links": sorted(peer.hex() for peer in self.links.links),
            "rss_bytes": _rss(),
            "towers": [t.describe() for t in self.towers],
        }

    async def open(self, args: dict[str, Any]) -> dict[str, Any]:
        timeout = _number(args.get("timeout", 30.0), "timeout")
        peer = parse_hex_id(str(args.get("peer_id", "")), "peer id")
        address = str(args.get("peer", ""))
        parse_hostport(address)
        if peer == self.node_id:
            raise LocalError("a node cannot open a channel with itself")
        app = self.load.app(str(args.get("app", "payments")))
        deposit = _amount(args.get("deposit", 0), "deposit")
        peer_deposit = _amount(args.get("peer_deposit", 0), "peer deposit")
        options = args.get("options") or {}
        if type(options) is not dict:
            raise LocalError("options must be a JSON object")
        check_plain(options)
        if deposit == peer_deposit == 0:
            raise LocalError("a channel must lock some value: give --deposit or --peer-deposit")
        have = await self.thread.call(self.l1.adapter.balance)
        if have < deposit:
            raise LocalError(f"this node holds {have} on L1, less than the deposit {deposit}")
        known = peer in self.addresses
        self.addresses.setdefault(peer, address)
        try:
            link = await asyncio.wait_for(self.links.link_to(peer), timeout)
            peer_account = await asyncio.wait_for(self.links.account_of(peer), timeout)
        except (OSError, TimeoutError, BfsSmrError) as exc:
            if not known:
                self.addresses.pop(peer, None)  # never re-dial an address that did not work
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise LocalError(f"cannot reach the peer at {address}: {reason}") from None
        if peer_account is None:
            raise LocalError(f"the peer is not on this node's L1 ({self.l1_spec})")
        params = ChannelParams(
            l1=self.l1.adapter.format.domain,
            participants=(self.account, peer_account),
            deposits=(deposit, peer_deposit),
            app=app.name,
            app_version=app.version,
            options=options,
            nonce=secrets.randbits(63),
            challenge_window=self.l1.window,
        )
        # The watch secret both nodes derive: a unilateral close must reveal it, and a
        # tower can read this node's entries only then (docs/watchtower.md).
        params = replace(params, watch=self.load.watch_commitment(peer, params))
        check_app(params, app, self.l1, self.signer)
        try:
            # As the peer reads the proposal: one it cannot read breaks the link, and the
            # proposal would go again at each redial until the timeout.
            parse_node_message(open_frame(params.to_value())[1:])
        except CodecError as exc:
            raise LocalError(
                f"the options do not fit in a channel proposal: {exc.reason}"
            ) from None
        cid = params.channel_id
        refused = await self.links.ask_open(peer, link, params, timeout)
        if refused is not None:
            raise LocalError(f"the peer refused the channel: {refused}")
        self.store.add_channel(params)
        self.store.set_peer(cid, peer, address)
        self.addresses[peer] = address
        c = self.load(cid)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        c.wait_opened(opened)
        c.chan.start()
        self.effects.flush(c)
        late = f"channel {cid.hex()} is not open on L1 after {timeout:g} s (L1: {c.l1_text})"
        await wait(opened, timeout, late + "; it may open later")
        c.log.info("channel opened")
        return self.describe(c)

    async def send(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        command = args.get("command")
        check_plain(command)
        if c.l1_status is not L1ChannelStatus.OPEN:
            await self.watcher.view(c)  # decide from the L1 now, not from an older look
        if c.l1_status is L1ChannelStatus.CLOSING and c.chan.app.to_move(c.chan.state) is not None:
            async with c.l1_turn():  # the dispute goes on, on L1
                seq, deadline = await self.watcher.force(c, command)
            return {"channel": c.cid.hex(), "seq": seq, "forced": True, "deadline": deadline}
        if c.l1_status is not L1ChannelStatus.OPEN:
            raise LocalError(f"the channel is {c.l1_text} on L1; it takes no commands")
        count = int(_amount(args.get("count", 1), "count"))
        if not 1 <= count <= MAX_BATCH:
            raise LocalError(f"count must be 1 to {MAX_BATCH:,}")
        # One command, or a caller's batch of ``count`` copies: one update, all or none.
        issue = self.effects
        fut = issue.issue(c, command) if count == 1 else issue.issue_batch(c, [command] * count)
        timeout = _number(args.get("timeout", 30.0), "timeout")
        late = f"not doubly signed within {timeout:g} s (is the peer up?)"
        seq = await wait(fut, timeout, late + "; the command stays pending and may still complete")
        return {"channel": c.cid.hex(), "seq": seq, "count": count}

    async def pay(self, args: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(args.get("amount"), "amount")
        return await self.send({**args, "command": {"pay": amount}})

    async def show(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.describe(self._chan_arg(args))

    async def list_channels(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every channel not yet paid out on L1; with ``all``, settled ones too."""
        every = bool(args.get("all", False))
        chans = [c for c in self.chans.values() if every or c.payouts is None]
        return {"channels": [self.describe(c) for c in chans]}

    async def close(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        timeout = _number(args.get("timeout", 60.0), "timeout")
        unilateral = bool(args.get("unilateral", False))
        if c.payouts is None:
            done: asyncio.Future[tuple[int, int] | None] = (
                asyncio.get_running_loop().create_future()
            )
            c.wait_settled(done)
            if unilateral:
                c.unilateral_asked = True
            else:
                c.close_asked = True
            # What to do depends on the channel's L1 status read now, never on the status
            # noted at the last look (stale after a restart, or right after an open).
            try:
                info = await self.watcher.react(c)
            except L1Error as exc:
                raise L1Error(f"L1 refused or unreachable: {exc}; the node retries") from None
            try:
                self._check_close_underway(c, info, unilateral)
            except LocalError:
                c.stop_waiting_settled(done)  # nothing to wait for: no close goes on
                c.close_asked = c.unilateral_asked = False
                raise
            late = f"not paid out within {timeout:g} s (L1: {c.l1_text}"
            if c.l1_status is L1ChannelStatus.CLOSING and c.l1_deadline is not None:
                late += f", window ends at {c.l1_deadline}"
            await wait(done, timeout, late + "); the node keeps at it")
        assert c.payouts is not None
        return {"channel": c.cid.hex(), "payouts": self._by_node(c, c.payouts)}

    def _check_close_underway(
        self, c: NodeChannel, info: L1ChannelInfo | None, unilateral: bool
    ) -> None:
        """After the L1 reaction to a close request: start the off-chain part of a
        cooperative close, or raise if the close cannot go on."""
        if info is None:
            why = f" ({c.l1_read_error})" if c.l1_read_error else ""
            raise LocalError(f"the channel is not on L1{why}: nothing is locked to close")
        if info.status is not L1ChannelStatus.OPEN or c.payouts is not None:
            return  # cancelled, closing (a window runs), or paid out
        if unilateral:
            # The policy closed with the newest update unless there is none.
            raise LocalError("nothing is doubly signed yet: there is nothing to close")
        chan = c.chan
        if chan.phase not in (Phase.CLOSED, Phase.CLOSING):
            if chan.pending == 0 and not chan.app.may_close(chan.state):
                # (The sequencer would deny it: say so now, not after a round trip.)
                game = chan.app.to_move(chan.state) is not None
                raise LocalError(
                    f"{chan.app.name} does not allow a cooperative close in this state"
                    + ("; finish the game, or close with --unilateral" if game else "")
                )
            chan.close()
            self.effects.flush(c)

    async def bench(self, args: dict[str, Any]) -> dict[str, Any]:
        """Pay 1, ``count`` times, through the same path as ``channel pay``; report the
        rate and the latency from issue to doubly signed and durable.

        ``window`` is the channel's pipelining window for the run (its ``max_in_flight``);
        ``batch`` payments go in each caller's batch; ``max_batch`` is the automatic
        batching for the run (1, the default, turns it off: one payment per update).
        Twice the window's worth of payments (or batches) are kept issued, so the
        sequencer always has the next one queued when a slot frees; a window of 1 is the
        sequential case, one payment in flight and one outstanding.
        """
        c = self._chan_arg(args)
        count = int(_amount(args.get("count", 1000), "count"))
        window = max(1, int(_amount(args.get("window", 1), "window")))
        batch = max(1, int(_amount(args.get("batch", 1), "batch")))
        auto = max(1, int(_amount(args.get("max_batch", 1), "max_batch")))
        if c.l1_status is not L1ChannelStatus.OPEN:
            raise LocalError(f"the channel is {c.l1_text} on L1; it takes no commands")
        rounds = -(-count // batch)
        latencies: list[float] = []
        left = rounds
        pay = {"pay": 1}
        effects = self.effects

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                if batch == 1:
                    await effects.issue(c, pay)
                else:
                    await effects.issue_batch(c, [pay] * batch)
                latencies.append(time.perf_counter() - t0)

        chan = c.chan
        saved = chan.limits
        chan.limits = replace(saved, max_in_flight=window, max_batch=auto)
        # (Bounded by the queue's size: a flood of batches gets "busy", not memory.)
        outstanding = 1 if window == 1 else max(1, min(2 * window, chan.max_queue // batch))
        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(outstanding, rounds))))
            elapsed = time.perf_counter() - start
        finally:
            chan.limits = saved
        latencies.sort()
        paid = rounds * batch
        return {
            "payments": paid,
            "window": window,
            "k": batch,
            "max_batch": auto,
            "outstanding": outstanding,
            "seconds": elapsed,
            "payments_per_second": paid / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e3,
        }

    def _chan_arg(self, args: dict[str, Any]) -> NodeChannel:
        text = str(args.get("channel", ""))
        matches = [c for cid, c in self.chans.items() if cid.hex().startswith(text.lower())]
        if not text or len(text) < 8 or not matches:
            raise LocalError(f"no channel {text!r} on this node")
        if len(matches) > 1:
            raise LocalError(f"{text!r} names {len(matches)} channels; give more digits")
        return matches[0]

    def describe(self, c: NodeChannel) -> dict[str, Any]:
        """A channel as ``channel show`` prints it (contract: docs/nodes.md, "Control").

        ``outcome`` is what the channel pays if it closes now: while a close is underway
        on L1 (a window runs, a dispute goes on), what the L1 pays if the window ended
        now, from the update registered there; once settled, what it paid. ``view`` is
        the app's view (:meth:`StateMachine.present`) of the state shown, for this node's
        party; ``deadline`` the end of the L1 window or of the forced move's answer
        period (Unix seconds, None if none runs); ``pending`` this node's commands
        issued and not yet committed.
        """
        chan = c.chan
        phase = chan.phase.value
        if c.l1_status in (L1ChannelStatus.CLOSING, L1ChannelStatus.SETTLED):
            phase = c.l1_status.value
        # In a dispute the game goes on from the newest forced move: show that position.
        forced, state = chan.force_base if chan.phase is Phase.DISPUTE else (None, chan.state)
        to_move = None if state is None else chan.app.to_move(state)
        closing = c.l1_status is L1ChannelStatus.CLOSING
        waiters = {id(w): w.left for w in (c.waiters or {}).values()}
        return {
            "channel": c.cid.hex(),
            "app": chan.params.app,
            "seq": chan.seq,
            "phase": phase,
            "l1": c.l1_status.value if c.l1_status else None,
            "peer": c.peer.hex(),
            "outcome": self._outcome_now(c, forced),
            # What the update at ``seq`` (the newest both signed) pays, whatever L1 holds.
            "committed_outcome": None
            if chan.committed is None
            else self._by_node(c, chan.committed.update.outcome),
            "state": None if state is None else plain_json(decode(chan.app.encode_state(state))),
            "view": None if state is None else self._view(c, state),
            "to_move": None
            if to_move is None
            else (self.node_id if to_move == chan.index else c.peer).hex(),
            "forced_seq": None if forced is None else forced.seq,
            "deadline": c.l1_deadline if closing else None,
            "pending": sum(waiters.values()),
            "payouts": None if c.payouts is None else self._by_node(c, c.payouts),
            # The seq each tower holds for this channel (None: none yet, or unknown).
            **(
                {"towers": {t.label: t.acked.get(c.cid) for t in self.towers}}
                if self.towers
                else {}
            ),
        }

    def _view(self, c: NodeChannel, state: Any) -> dict[str, Any] | None:
        """The app's view of ``state`` for this node, or None if its :meth:`present`
        fails or gives what JSON cannot hold: the peer can steer a channel to any state the
        app reaches, and one app's bug must not break ``list`` of every channel, the API
        or the event stream (logged once per channel and seq)."""
        try:
            view = c.chan.app.present(state, c.chan.index)
            json.dumps(view, allow_nan=False)
        except Exception as exc:  # noqa: BLE001 - the app's bug, not the node's
            if self._bad_views.get(c.cid) != c.chan.seq:
                self._bad_views[c.cid] = c.chan.seq
                _log.warning(
                    "the app's present() failed: no view",
                    channel=c.cid.hex(),
                    app=c.chan.params.app,
                    seq=c.chan.seq,
                    reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                )
            return None
        if type(view) is not dict:
            return None
        return view

    def _outcome_now(self, c: NodeChannel, forced: SignedUpdate | None) -> dict[str, int] | None:
        """What the channel pays if it closes now, by node id (None: nothing signed)."""
        if c.payouts is not None:
            return self._by_node(c, c.payouts)  # what the L1 paid
        newest = c.chan.committed
        if c.l1_status is L1ChannelStatus.CLOSING:
            # The L1 pays the registered update when the window ends: a forced move's or
            # the newest both signed. (A stale close this node refutes falls through: the
            # refute registers the newest.)
            for update in (c.l1_forced, forced, newest):
                if update is not None and update.seq == c.l1_registered:
                    return self._by_node(c, update.update.outcome)
        return None if newest is None else self._by_node(c, newest.update.outcome)

    def _by_node(self, c: NodeChannel, amounts: tuple[int, int]) -> dict[str, int]:
        ids = [b"", b""]
        ids[c.chan.index], ids[1 - c.chan.index] = self.node_id, c.peer
        return {ids[i].hex(): amounts[i] for i in (0, 1)}

    def by_node(self, c: NodeChannel, amounts: tuple[int, int]) -> dict[str, int]:
        """Amounts by participant index → by node id, in hex (the event stream's form)."""
        return self._by_node(c, amounts)


def _amount(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise LocalError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or value <= 0:
        raise LocalError(f"{what} must be a positive number")
    return float(value)


def _rss() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
