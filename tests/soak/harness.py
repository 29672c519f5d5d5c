"""The soak run: set up nodes, drive faults and commands, drain, check the invariants."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.nodeproc import NodeProc

from .l1 import EvmView, L1View, LocalView
from .model import Chan, Node, Report
from .proxy import Proxy

__all__ = ["BENIGN", "CONTROL_LIMIT", "LINK_DEADLINE", "QUIET", "REGISTER_DEADLINE", "Soak"]

QUIET = 6.0
"""Seconds two nodes must be undisturbed before a failed command between them counts as a
violation (a lost link is re-dialled with a backoff of up to 5 s)."""
LINK_DEADLINE = 15.0
"""Seconds a restarted node has to be linked again with its peers."""
REGISTER_DEADLINE = 4.0
"""Seconds within which a unilateral close must show on L1 (a transaction or two)."""
CONTROL_LIMIT = 1.0
"""The most a control request may take, in seconds."""
BENIGN = (
    "not your turn",
    "is taken",
    "the game is over",
    "takes no commands",
    "overdraft",
    "insufficient",
    "more than",
    "exceeds",
)
"""Refusals that are a right answer to a command made on a stale view, not a fault."""


class Soak:
    """One run: ``Soak(config).run()`` returns a :class:`Report`."""

    def __init__(
        self,
        workdir: Path,
        *,
        seed: int,
        seconds: float,
        l1: str,
        nodes: int = 3,
        window: int | None = None,
        max_channels: int = 8,
        anvil_url: str | None = None,
        skip: tuple[str, ...] = (),
    ) -> None:
        self.dir = workdir
        self.skip = set(skip)
        self.rng = random.Random(seed)
        self.seconds = seconds
        self.l1_kind = l1
        self.n_nodes = nodes
        self.window = window or (5 if l1 == "local" else 8)
        self.max_channels = max_channels
        self.anvil_url = anvil_url
        self.report = Report(seed=seed, l1=l1)
        self.nodes: list[Node] = []
        self.chans: dict[str, Chan] = {}
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self._stop = threading.Event()
        self._lock = threading.RLock()  # chans, report
        self._seen_violations: set[str] = set()
        self._timers: list[threading.Timer] = []
        self._closers = ThreadPoolExecutor(8, thread_name_prefix="soak-close")
        self._closing: list[Future[None]] = []
        self._link_checks: list[tuple[float, Node]] = []
        self.l1: L1View
        self.initial_value = 0
        self.funding = 0

    # -- bookkeeping ------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        with self._lock:
            self.report.events.append(f"{self.now():7.2f} {text}")

    def violation(self, key: str, text: str) -> None:
        """Record a violation once per ``key``."""
        with self._lock:
            if key in self._seen_violations:
                return
            self._seen_violations.add(key)
            self.report.violations.append(f"[{self.now():.1f} s] {text}")
        self.log(f"VIOLATION {text}")

    def quiet(self, *nodes: Node, since: float | None = None) -> bool:
        """All ``nodes`` are up and were undisturbed for QUIET seconds (before ``since``)."""
        moment = time.monotonic() if since is None else since
        return all(n.state == "up" and not n.busy and moment - n.disturbed > QUIET for n in nodes)

    @staticmethod
    def calm(nodes: tuple[Node, ...], since: float) -> bool:
        """All ``nodes`` are up, with no fault in progress and none since ``since``."""
        return all(n.state == "up" and not n.busy and n.disturbed < since for n in nodes)

    # -- setup ------------------------------------------------------------------------------

    def _extra(self) -> tuple[str, ...]:
        extra = ["--log-level", "info"]  # the last --log-level wins: less to write
        if self.l1_kind == "evm":
            extra += ["--window", str(self.window)]
        # The nodes' inbound-channel policy must accept this run's channels: the apps it
        # plays, the deposits it asks of a peer and its window.
        extra += ["--max-inbound-deposit", str(10**30), "--max-window", str(self.window)]
        extra += ["--accept-app", "payments", "--accept-app", "tictactoe"]
        return tuple(extra)

    def setup(self) -> None:
        if self.l1_kind == "local":
            self.l1 = LocalView(self.dir / "l1.sqlite3", self.window)
            self.funding = 10**6
        else:
            assert self.anvil_url is not None
            self.l1 = EvmView(self.anvil_url)
            self.funding = 10**18
        extra = self._extra()
        self.log(f"L1 ready ({self.l1.spec})")

        def make(i: int) -> Node:
            proxy = None
            spec = self.l1.spec
            if isinstance(self.l1, EvmView):
                assert self.anvil_url is not None
                proxy = Proxy(int(self.anvil_url.rsplit(":", 1)[1]))
                spec = f"evm:{proxy.url}"
            from bfs_smr.runtime.store._datadir import DataDir

            DataDir(self.dir / f"node{i}").init()  # what `bfs-smr init` does, minus a process
            proc = NodeProc(self.dir / f"node{i}", spec, extra=extra)
            return Node(index=i, proc=proc, proxy=proxy)

        with ThreadPoolExecutor(self.n_nodes) as pool:
            self.nodes = list(pool.map(make, range(self.n_nodes)))
        for node in self.nodes:
            node.account = self.l1.fund(node.proc, self.funding)
        self.log("nodes initialised and funded")
        if isinstance(self.l1, EvmView):
            self.l1.start()
        self.initial_value = self.l1.value([n.account for n in self.nodes])
        with ThreadPoolExecutor(self.n_nodes) as pool:
            list(pool.map(self._start, self.nodes))
        self.log(f"{self.n_nodes} nodes up, window {self.window} s, value {self.initial_value}")

    def _start(self, node: Node) -> bool:
        error = ""
        for _ in range(3):
            try:
                node.proc.start()
            except (AssertionError, OSError, ValueError) as exc:
                _drop(node)
                lines = [line for line in str(exc).splitlines() if "error" in line]
                error = (lines or [str(exc)])[-1][-300:]
                time.sleep(1)
                continue
            node.mark("up")
            if node.down_since is not None:
                node.longest_down = max(node.longest_down, time.monotonic() - node.down_since)
                node.down_since = None
            return True
        self.violation(f"start-{node.index}", f"n{node.index} does not start again: {error}")
        node.mark("broken", busy=True)  # left out of the rest of the run
        return False

    # -- background threads -------------------------------------------------------------------

    def _probe(self) -> None:
        """Ask every running node for its status, twice a second; keep the worst latency."""
        from bfs_smr.runtime.node._control import call

        while not self._stop.wait(0.5):
            for node in self.nodes:
                with node.lock:
                    if node.state != "up":
                        continue
                    gen = node.gen
                start = time.perf_counter()
                error: str | None = None
                try:
                    call(node.proc.dir, "status", timeout=CONTROL_LIMIT * 2)
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    error = str(exc)
                took = time.perf_counter() - start
                with node.lock:
                    if node.gen != gen or node.state != "up":
                        continue  # stopped or killed meanwhile: not the node's fault
                with self._lock:
                    self.report.worst_control_s = max(self.report.worst_control_s, took)
                if error is not None or took > CONTROL_LIMIT:
                    self.violation(
                        f"control-{node.index}-{int(self.now() // 10)}",
                        f"control: n{node.index} answered status in {took:.2f} s"
                        + (f" ({error})" if error else ""),
                    )

    def _monitor(self) -> None:
        """Watch the L1 (value, forced moves) and the node processes."""
        while not self._stop.wait(0.4):
            try:
                if isinstance(self.l1, LocalView):
                    value = self.l1.value([])
                    if value != self.initial_value:
                        self.violation(
                            f"value-{value}",
                            f"conservation: L1 holds {value}, not {self.initial_value}",
                        )
                    with self._lock:
                        watched = [c for c in self.chans.values() if c.settled is None]
                    for c in watched:
                        if c.closes or c.l1 == "closing":
                            self._look(c)
            except Exception as exc:  # noqa: BLE001 - the L1 file is busy: look again later
                self.log(f"monitor: {exc}")
            for node in self.nodes:
                with node.lock:
                    died = node.state == "up" and not node.proc.alive()
                if died:
                    code = node.proc.proc.returncode if node.proc.proc else None
                    tail = node.proc.log.read_text()[-400:].replace("\n", " | ")
                    self.violation(
                        f"died-{node.index}-{int(self.now())}",
                        f"n{node.index} exited on its own (code {code}): {tail}",
                    )
                    _drop(node)
                    node.mark("down")

    def _look(self, c: Chan) -> None:
        info = self.l1.channel(c.cid)
        if info is None:
            return
        forced = info["forced"]
        if forced is not None and (c.forced is None or forced[0] > c.forced[0]):
            c.forced = forced
            self.log(f"{c.short} forced on L1 at seq {forced[0]}, outcome {forced[1]}")
        if info["status"] in ("settled", "cancelled") and c.settled is None:
            first, second = info["payouts"] or (0, 0)
            c.settled = (int(first), int(second))
            self.log(f"{c.short} {info['status']} on L1: {c.settled}")

    # -- observing ----------------------------------------------------------------------------

    def observe(self, node: Node) -> None:
        """Record every channel ``node`` lists: its committed seq and outcome."""
        if node.state != "up":
            return
        try:
            listed = node.proc.call("list", timeout=5, all=True)["channels"]
        except Exception as exc:  # noqa: BLE001 - down meanwhile, or slow: the probe judges
            self.log(f"n{node.index} list failed: {exc}")
            return
        for shown in listed:
            with self._lock:
                c = self.chans.get(shown["channel"])
                if c is None:
                    c = self._adopt(node, shown)
                self._record(c, node, shown)

    def _adopt(self, node: Node, shown: dict[str, Any]) -> Chan:
        """A channel the harness did not see open (its open call failed or timed out)."""
        peer = next(n for n in self.nodes if n.id == shown["peer"])
        # The opener is participant 0; the node's outcome lists both, in that order.
        ids = list(shown["outcome"] or {})
        first = ids[0] if ids else node.id
        opener, other = (node, peer) if first == node.id else (peer, node)
        c = Chan(cid=shown["channel"], app=shown["app"], opener=opener, peer=other)
        self.chans[c.cid] = c
        self.log(f"{c.short} found on n{node.index} ({c.app}, n{opener.index}->n{other.index})")
        return c

    def _record(self, c: Chan, node: Node, shown: dict[str, Any]) -> None:
        seq = int(shown["seq"])
        before = c.seqs.get(node.index, -1)
        if seq < before:
            self.violation(
                f"back-{c.cid}-{node.index}",
                f"durability: {c.short} on n{node.index} went back from committed seq "
                f"{before} to {seq}",
            )
        c.seqs[node.index] = max(seq, before)
        # (``outcome`` is what the channel pays now: during a close on L1, what the L1
        # pays; ``committed_outcome`` is the update's at ``seq``, the one checked here.)
        if shown["committed_outcome"] is not None and seq >= 0:
            pair = c.pair(shown["committed_outcome"])
            known = c.outcomes.get(seq)
            if known is not None and known != pair:
                self.violation(
                    f"fork-{c.cid}-{seq}",
                    f"fork: {c.short} has outcomes {known} and {pair} at {seq}",
                )
            c.outcomes[seq] = pair
            c.max_seq = max(c.max_seq, seq)
        c.l1 = shown["l1"] or c.l1
        c.view[node.index] = shown
        if shown["payouts"] is not None and c.settled is None:
            c.settled = c.pair(shown["payouts"])

    def committed(self, c: Chan, node: Node, seq: int) -> None:
        """``node`` reported seq ``seq`` of ``c`` committed (a command's answer)."""
        with self._lock:
            c.max_seq = max(c.max_seq, seq)

    # -- actions ------------------------------------------------------------------------------

    def _live(self, app: str | None = None) -> list[Chan]:
        with self._lock:
            return [
                c
                for c in self.chans.values()
                if c.settled is None
                and not c.closes
                and (app is None or c.app == app)
                and c.l1 == "open"
            ]

    def _up(self) -> list[Node]:
        return [n for n in self.nodes if n.state == "up" and not n.busy]

    def _failed(self, what: str, nodes: tuple[Node, ...], since: float, exc: Exception) -> None:
        text = str(exc)
        if "internal error" in text:  # the control endpoint's answer to an exception
            self.violation(f"internal-{text[:60]}", f"control: {what} gave {text[:300]}")
            return
        if any(b in text for b in BENIGN):
            self.log(f"{what}: refused: {text}")
            return
        if self.quiet(*nodes, since=since) and self.quiet(*nodes):
            self.violation(
                f"{what}-{text[:40]}", f"liveness: {what} failed between quiet nodes: {text}"
            )
        else:
            self.log(f"{what}: failed (disturbed): {text[:200]}")

    def act_open(
        self, opener: Node | None = None, why: str = "", app: str | None = None
    ) -> Chan | None:
        up = self._up()
        if opener is None:
            with self._lock:
                live = sum(1 for c in self.chans.values() if c.settled is None)
            if live >= self.max_channels or len(up) < 2:
                return None
            opener = self.rng.choice(up)
        peers = [n for n in up if n is not opener]
        if not peers:
            return None
        peer = self.rng.choice(peers)
        game = self.rng.random() < 0.35 if app is None else app == "tictactoe"
        deposit = self.rng.randint(5, 50)
        peer_deposit = deposit if game else self.rng.choice([0, 0, self.rng.randint(1, 30)])
        args: dict[str, Any] = {
            "peer": peer.proc.address,
            "peer_id": peer.id,
            "app": "tictactoe" if game else "payments",
            "deposit": deposit,
            "peer_deposit": peer_deposit,
        }
        what = f"open n{opener.index}->n{peer.index} {args['app']} {deposit}/{peer_deposit}{why}"
        since = time.monotonic()
        try:
            shown = opener.proc.call("open", timeout=20, **args)
        except Exception as exc:  # noqa: BLE001 - judged by _failed
            if why:  # the open after a restart must work if the peer is quiet
                self._failed(f"new channel after restart ({what})", (peer,), since, exc)
            else:
                self._failed(what, (opener, peer), since, exc)
            return None
        c = Chan(cid=shown["channel"], app=args["app"], opener=opener, peer=peer)
        with self._lock:
            self.chans[c.cid] = c
            self._record(c, opener, shown)
            self.report.count("channels")
        self.log(f"{what}: {c.short}")
        if not why and "close" not in self.skip and self.rng.random() < 0.1:
            # The peer closes the moment the channel is open, as a follower sees it then.
            self.close(c, peer, True, timeout=self.window * 4 + 20)
        return c

    def act_pay(self) -> None:
        live = self._live("payments")
        if not live:
            return
        c = self.rng.choice(live)
        payer = self.rng.choice(c.nodes())
        other = c.peer if payer is c.opener else c.opener
        shown = c.view.get(payer.index) or c.view.get(other.index)
        if shown is None or shown["outcome"] is None or payer.state != "up":
            return
        have = int(shown["outcome"][payer.id])
        if have <= 0:
            return
        amount = self.rng.randint(1, max(1, min(have // 4, 5)))
        since = time.monotonic()
        try:
            done = payer.proc.call("pay", timeout=5, channel=c.cid, amount=amount)
        except Exception as exc:  # noqa: BLE001 - judged by _failed
            self._failed(f"pay {amount} on {c.short} by n{payer.index}", c.nodes(), since, exc)
            return
        self.committed(c, payer, int(done["seq"]))
        self.report.count("payments")
        if self.rng.random() < 0.3:
            self.observe(payer)

    def act_move(self) -> None:
        """A tic-tac-toe move by whoever is to move; during a dispute it is forced on L1."""
        with self._lock:
            games = [c for c in self.chans.values() if c.app == "tictactoe" and c.settled is None]
        if not games:
            return
        c = self.rng.choice(games)
        player = self.rng.choice(c.nodes())
        if player.state != "up" or player.busy:
            return
        try:
            shown = player.proc.call("show", timeout=5, channel=c.cid)
        except Exception as exc:  # noqa: BLE001 - down meanwhile
            self.log(f"show {c.short} on n{player.index}: {exc}")
            return
        with self._lock:
            self._record(c, player, shown)
        if shown["to_move"] != player.id or shown["state"] is None:
            return
        if shown["l1"] != "open" and not (shown["l1"] == "closing" and self.l1.supports_force):
            return
        board = shown["state"][0]
        cell = self.rng.choice([i for i, v in enumerate(board) if v == 0])
        since = time.monotonic()
        try:
            done = player.proc.call("send", timeout=5, channel=c.cid, command={"cell": cell})
        except Exception as exc:  # noqa: BLE001 - judged by _failed
            self._failed(f"move {cell} on {c.short} by n{player.index}", c.nodes(), since, exc)
            return
        if done.get("forced"):
            deadline = done.get("deadline")
            self.log(
                f"{c.short}: n{player.index} forced cell {cell} at seq {done['seq']}, {deadline=}"
            )
            self.report.count("forced moves")
        else:
            self.committed(c, player, int(done["seq"]))
        self.report.count("moves")

    def close(self, c: Chan, node: Node, unilateral: bool, timeout: float) -> None:
        kind = f"{'unilateral' if unilateral else 'coop'} by n{node.index}"
        with self._lock:
            c.closes.append(kind)
            c.in_close += 1
            self.report.count("closes " + kind.split(maxsplit=1)[0])
        self.log(f"close {c.short} {kind} at seq {c.max_seq}")
        involved = (node,) if unilateral else c.nodes()

        def run() -> None:
            since = time.monotonic()
            calm = self.calm(involved, since)  # no outage running as it starts
            try:
                done = node.proc.call(
                    "close", timeout=timeout, channel=c.cid, unilateral=unilateral
                )
                self.log(f"close {c.short} {kind}: paid {c.pair(done['payouts'])}")
            except Exception as exc:  # noqa: BLE001 - judged here and at the end
                self.log(f"close {c.short} {kind}: {str(exc)[:200]}")
                self._close_failed(c, kind, involved if calm else (), since, exc)
            finally:
                with self._lock:
                    c.in_close -= 1

        self._closing.append(self._closers.submit(run))
        if unilateral and self.calm((node,), time.monotonic()):
            asked = time.monotonic()
            self._later(REGISTER_DEADLINE, lambda: self._check_registered(c, node, kind, asked))

    def _check_registered(self, c: Chan, node: Node, kind: str, asked: float) -> None:
        """A unilateral close puts the channel on L1 at once (closing, settled, or cancelled
        if still funding), unless its node was disturbed meanwhile."""
        if self._stop.is_set() or not self.calm((node,), asked):
            return
        try:
            info = self.l1.channel(c.cid)
        except Exception as exc:  # noqa: BLE001 - the L1 file is busy: not judged
            self.log(f"check {c.short}: {exc}")
            return
        status = None if info is None else info["status"]
        if status in (None, "open", "funding"):
            self.violation(
                f"register-{c.cid}-{kind}",
                f"close: {kind} of {c.short} ({c.app}, seq {c.max_seq}) left it "
                f"{status or 'absent'} on L1 {REGISTER_DEADLINE:g} s later, its node undisturbed",
            )

    def _close_failed(
        self, c: Chan, kind: str, involved: tuple[Node, ...], since: float, exc: Exception
    ) -> None:
        """A close command failed: a fault if it left nothing on L1 between quiet nodes."""
        text = str(exc)
        if self._stop.is_set():
            return  # the run is over and its nodes were stopped under the command
        if "internal error" in text:
            self.violation(f"internal-{text[:60]}", f"control: close {c.short} gave {text[:300]}")
        if not involved or not self.calm(involved, since):
            return  # killed, paused or cut off from L1 around the close: not judged here
        info = self.l1.channel(c.cid)
        status = None if info is None else info["status"]
        if status in (None, "open", "funding"):
            self.violation(
                f"close-{c.cid}-{kind}",
                f"close: {kind} of {c.short} ({c.app}, seq {c.max_seq}) failed and left it "
                f"{status or 'absent'} on L1, undisturbed during the close: {text[:200]}",
            )

    def act_close(self) -> None:
        live = self._live()
        if not live:
            return
        c = self.rng.choice(live)
        node = self.rng.choice(c.nodes())
        if node.state != "up":
            return
        game_on = c.app == "tictactoe" and (c.view.get(node.index) or {}).get("to_move")
        unilateral = bool(game_on) or self.rng.random() < 0.5
        self.close(c, node, unilateral, timeout=self.window * 4 + 20)

    def act_force(self) -> None:
        """A player closes with its move pending while the peer is paused: its node forces
        the move on L1, and the peer, back, adopts it (and may answer in turn)."""
        if not self.l1.supports_force:
            return
        games = self._live("tictactoe")
        if not games:
            return
        c = self.rng.choice(games)
        shown = c.view.get(c.opener.index) or c.view.get(c.peer.index)
        if shown is None or shown["to_move"] is None:
            return
        player = c.opener if shown["to_move"] == c.opener.id else c.peer
        other = c.peer if player is c.opener else c.opener
        if player not in self._up() or other not in self._up() or self._disturbed() >= 2:
            return
        board = shown["state"][0]
        cell = self.rng.choice([i for i, v in enumerate(board) if v == 0])
        pause = self.rng.uniform(1.5, self.window * 0.5)
        self.log(f"force scenario on {c.short}: n{other.index} paused {pause:.1f} s")
        self.report.count("stops")
        self.report.count("force scenarios")
        other.mark("stopped", busy=True)
        assert other.proc.proc is not None
        other.proc.proc.send_signal(signal.SIGSTOP)
        self._later(pause, lambda: self._cont(other))
        try:
            player.proc.call("send", timeout=1, channel=c.cid, command={"cell": cell})
        except Exception as exc:  # noqa: BLE001 - pending, as expected
            self.log(f"{c.short}: n{player.index} move {cell}: {str(exc)[:80]}")
        self.close(c, player, True, timeout=self.window * 4 + 20)

    def _disturbed(self) -> int:
        return sum(1 for n in self.nodes if n.busy)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _cont(self, node: Node) -> None:
        with node.lock:
            proc = node.proc.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        node.mark("up", busy=False)
        self.log(f"n{node.index} continued")

    def act_stop(self) -> None:
        up = self._up()
        if not up or self._disturbed() >= 2:
            return
        node = self.rng.choice(up)
        pause = self.rng.uniform(0.3, min(2.5, self.window * 0.4))
        node.mark("stopped", busy=True)
        assert node.proc.proc is not None
        node.proc.proc.send_signal(signal.SIGSTOP)
        self.report.count("stops")
        self.log(f"n{node.index} stopped for {pause:.1f} s")
        self._later(pause, lambda: self._cont(node))

    def act_outage(self) -> None:
        up = [n for n in self._up() if n.proxy is not None]
        if not up or self._disturbed() >= 2:
            return
        node = self.rng.choice(up)
        assert node.proxy is not None
        mode = self.rng.choice(["reset", "hang"])
        length = self.rng.uniform(1.0, min(4.0, self.window * 0.5))
        node.mark(busy=True)
        node.proxy.cut(mode)
        self.report.count("L1 outages")
        self.log(f"n{node.index} L1 cut ({mode}) for {length:.1f} s")
        proxy = node.proxy

        def restore() -> None:
            proxy.restore()
            node.mark(busy=False)
            self.log(f"n{node.index} L1 restored")

        self._later(length, restore)

    def act_kill(self) -> None:
        up = self._up()
        if not up or self._disturbed() >= 2:
            return
        node = self.rng.choice(up)
        node.mark("down", busy=True)
        node.down_since = time.monotonic()
        if node.proc.alive():
            node.proc.kill()
        else:
            _drop(node)  # it died on its own just now: the monitor reports that
        self.report.count("kills")
        self.log(f"n{node.index} killed (-9)")
        time.sleep(self.rng.uniform(0, 0.5))
        self.restart(node)

    def restart(self, node: Node) -> None:
        if not self._start(node):
            return
        node.mark(busy=False)
        self.report.count("restarts")
        self.log(f"n{node.index} restarted")
        with self._lock:
            self._link_checks.append((time.monotonic() + LINK_DEADLINE, node))
            mine = [c for c in self._live() if node in c.nodes()]
        if mine and "close" not in self.skip and self.rng.random() < 0.3:
            # Closing at once after a restart: the node must act on L1 as it is now.
            self.close(self.rng.choice(mine), node, True, timeout=self.window * 4 + 20)
        self.act_open(opener=node, why=" after restart")

    # -- checks during the run ----------------------------------------------------------------

    def check_links(self, final: bool = False) -> None:
        """A restarted node is linked again with every peer of an unsettled channel."""
        now = time.monotonic()
        keep: list[tuple[float, Node]] = []
        for deadline, node in self._link_checks:
            peers = [self.nodes[i] for i in self._peers_of(node)]
            if any(n.state != "up" for n in [node, *peers]) or any(
                now - n.disturbed < LINK_DEADLINE for n in peers
            ):
                if not final:  # a peer is down or was just disturbed: not its fault yet
                    keep.append((max(deadline, now + LINK_DEADLINE), node))
                continue
            missing = self._missing_links(node, peers)
            if not missing:
                continue
            if now < deadline and not final:
                keep.append((deadline, node))
            else:
                names = ", ".join(f"n{i}" for i in missing)
                self.violation(
                    f"link-{node.index}-{missing}-{int(deadline)}",
                    f"links: n{node.index} not linked with {names} {LINK_DEADLINE:g} s after "
                    f"its restart, though they share unsettled channels",
                )
        self._link_checks = keep

    def _peers_of(self, node: Node) -> list[int]:
        """The nodes ``node`` shares an unsettled channel with."""
        with self._lock:
            return sorted(
                {
                    (c.peer if c.opener is node else c.opener).index
                    for c in self.chans.values()
                    if c.settled is None and node in c.nodes() and c.l1 not in (None, "settled")
                }
            )

    def _missing_links(self, node: Node, peers: list[Node]) -> list[int]:
        missing = []
        for other in peers:
            i = other.index
            try:
                mine = node.proc.call("status", timeout=3)["links"]
                theirs = other.proc.call("status", timeout=3)["links"]
            except Exception:  # noqa: BLE001 - not up: judged when it is
                missing.append(i)
                continue
            if other.id not in mine or node.id not in theirs:
                missing.append(i)
        return missing

    def tick(self, last: list[float]) -> None:
        """Between actions: look at every node now and then; restart a node that died."""
        for node in self.nodes:
            if node.state == "down" and not node.busy:
                node.mark(busy=True)
                self.restart(node)
        if time.monotonic() - last[0] > 1.5:
            last[0] = time.monotonic()
            for node in self.nodes:
                self.observe(node)
            self.check_links()

    # -- the run ----------------------------------------------------------------------------------

    def chaos(self) -> None:
        evm = self.l1_kind == "evm"  # slower L1 and restarts: fewer opens and kills
        actions: list[tuple[Callable[[], Any], float]] = [
            (self.act_open, 1.5 if evm else 2.0),
            (self.act_pay, 6.0),
            (self.act_move, 3.0),
            (self.act_close, 1.2),
            (self.act_force, 0.8 if self.l1.supports_force else 0.0),
            (self.act_kill, 0.5 if evm else 0.8),
            (self.act_stop, 0.8),
            (self.act_outage, 1.5 if evm else 0.0),
        ]
        actions = [(a, w) for a, w in actions if a.__name__.removeprefix("act_") not in self.skip]
        fns = [a for a, _ in actions]
        weights = [w for _, w in actions]
        end = time.monotonic() + self.seconds
        last = [0.0]
        # A few channels first, so the faults have something to hit; then every kind of
        # fault once (a kill first: it is over when it returns), so a short run has each.
        for _ in range(min(3, self.max_channels)):
            self.act_open()
        chosen = dict(actions)
        for fault in (self.act_kill, self.act_outage, self.act_force, self.act_stop):
            if chosen.get(fault, 0.0) > 0:
                if fault == self.act_force and not self._live("tictactoe"):
                    self.act_open(app="tictactoe")  # a game to force a move in
                fault()
                self.act_pay()
        while time.monotonic() < end:
            self.tick(last)
            self.rng.choices(fns, weights)[0]()
            time.sleep(self.rng.uniform(0.05, 0.25))

    def drain(self) -> None:
        """Undo every fault, close every channel that is still open, wait for L1."""
        for timer in self._timers:
            timer.join()
        for node in self.nodes:
            if node.state == "down":
                node.mark(busy=True)
                self.restart(node)
        self.log("drain: every node up")
        time.sleep(min(QUIET, 3.0))
        for node in self.nodes:
            self.observe(node)
        with self._lock:  # not yet closed, or closes that failed: close (again)
            open_ = [
                c
                for c in self.chans.values()
                if c.settled is None and not c.in_close and c.max_seq >= 0  # seq 0 signed
            ]
        for c in open_:
            # A node that lists the channel (an open the peer refused is only the opener's).
            holders = [n for n in c.nodes() if n.state == "up" and n.index in c.view]
            node = self.rng.choice(holders or [c.opener])
            game_on = c.app == "tictactoe" and (c.view.get(node.index) or {}).get("to_move")
            alone = any(n.state != "up" for n in c.nodes())  # the peer does not start
            unilateral = alone or bool(game_on) or self.rng.random() < 0.3
            self.close(c, node, unilateral, self.window * 3 + 20)
        # A unilateral close settles after a window; a game's pending move forced in the
        # drain (local L1) takes one more. A channel not settled by then is stuck.
        deadline = time.monotonic() + self.window * (1.5 if self.l1.supports_force else 1) + 8
        while time.monotonic() < deadline:
            with self._lock:
                waiting = [c for c in self.chans.values() if c.settled is None]
            for c in waiting:
                self._look(c)
            if not waiting:
                break
            for node in self.nodes:
                self.observe(node)
            self.check_links()
            time.sleep(1.0)
        for fut in self._closing:
            with contextlib.suppress(Exception):
                fut.result(timeout=max(0.1, deadline - time.monotonic()))
        for node in self.nodes:
            self.observe(node)
        self.check_links(final=True)

    def verify(self) -> None:
        """The invariants over the whole run."""
        for c in self.chans.values():
            self._verify_channel(c)
        value = self.l1.value([n.account for n in self.nodes])
        if value != self.initial_value:
            self.violation(
                "value-end",
                f"conservation: L1 value {value} at the end, {self.initial_value} at the start "
                f"({value - self.initial_value:+d})",
            )
        for node in self.nodes:
            self._verify_log(node)

    def _verify_channel(self, c: Chan) -> None:
        info = self.l1.channel(c.cid)
        where = (
            f"{c.short} ({c.app}, n{c.opener.index}->n{c.peer.index}, closes: "
            f"{', '.join(c.closes) or 'none'})"
        )
        if info is None:
            if c.max_seq > 0:
                self.violation(
                    f"never-{c.cid}", f"settlement: {where} never reached L1 at seq {c.max_seq}"
                )
            else:
                self.log(f"{where}: never on L1 (nothing was locked)")
            return
        if info["status"] == "cancelled":
            self.log(f"{where}: cancelled")
            return
        if info["status"] != "settled":
            phases = {f"n{i}": (v["phase"], v["l1"], v["seq"]) for i, v in c.view.items()}
            self.violation(
                f"unsettled-{c.cid}",
                f"settlement: {where} is {info['status']} on L1 at the end "
                f"(registered seq {info['registered_seq']}, newest committed {c.max_seq}, "
                f"nodes: {phases})",
            )
            return
        paid = tuple(info["payouts"])
        expect = c.outcomes.get(c.max_seq)
        source = f"committed seq {c.max_seq}"
        if c.forced is not None and c.forced[0] > c.max_seq:
            expect, source = c.forced[1], f"forced seq {c.forced[0]}"
        if expect is None:
            self.violation(
                f"unknown-{c.cid}", f"settlement: {where} seq {c.max_seq} outcome never seen"
            )
        elif paid != expect:
            down = max(c.opener.longest_down, c.peer.longest_down)
            excuse = ""
            if down >= self.window:  # a node that is down for a window cannot answer on L1
                excuse = f"; but a node was down {down:.1f} s, a window or more: maybe no fault"
            self.violation(
                f"payout-{c.cid}",
                f"settlement: {where} paid {paid}, but the newest outcome is {expect} "
                f"({source}){excuse}",
            )
        self.report.count("settled")

    def _verify_log(self, node: Node) -> None:
        downs = 0
        for line in node.proc.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line or "never retrieved" in line:
                    self.violation(f"tb-{node.index}", f"log: n{node.index}: {line[:200]}")
                continue
            event = str(entry.get("event", ""))
            if event == "link down":
                downs += 1
            elif event == "peer broke the protocol":
                self.violation(
                    f"proto-{node.index}-{str(entry.get('reason'))[:30]}",
                    f"links: n{node.index} says an honest peer broke the protocol: "
                    f"{entry.get('reason')} (first at {self._when(entry)})",
                )
            elif event == "background task failed" or "never retrieved" in event:
                self.violation(
                    f"task-{node.index}-{str(entry.get('error'))[:30]}",
                    f"log: n{node.index}: {event}: {entry.get('error', '')} "
                    f"(first at {self._when(entry)})",
                )
        self.report.count("link drops", downs)

    def _when(self, entry: dict[str, Any]) -> str:
        """A log entry's time as seconds into the run (as in the event log)."""
        from datetime import datetime

        try:
            at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return "?"
        return f"{at.timestamp() - self.wall0:.1f} s"

    def run(self) -> Report:
        self.wall0 = time.time()
        self.t0 = time.monotonic()
        threads = [
            threading.Thread(target=self._probe, daemon=True, name="soak-probe"),
            threading.Thread(target=self._monitor, daemon=True, name="soak-monitor"),
        ]
        try:
            self.setup()
            for thread in threads:
                thread.start()
            self.chaos()
            self.drain()
            self.verify()
        finally:
            self._stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(10)
            self.teardown()
        self.report.seconds = self.now()
        self.report.count("nodes", self.n_nodes)
        longest = max((n.longest_down for n in self.nodes), default=0.0)
        self.report.counts["longest restart ms"] = int(longest * 1000)
        return self.report

    def teardown(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for node in self.nodes:
            node.mark("down")
            proc = node.proc.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                node.proc.kill()
            if node.proxy is not None:
                node.proxy.close()
        self._closers.shutdown(wait=False, cancel_futures=True)
        self.l1.close()


def _drop(node: Node) -> None:
    """Forget a node process that has exited (closing its pipe; no zombie left)."""
    proc = node.proc.proc
    node.proc.proc = None
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
