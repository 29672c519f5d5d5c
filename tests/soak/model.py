"""What the soak knows of nodes, channels and the run: plain records."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.nodeproc import NodeProc

from .proxy import Proxy

__all__ = ["Chan", "Node", "Report"]


@dataclass
class Node:
    """One node process and what the harness knows of it."""

    index: int
    proc: NodeProc
    account: str = ""
    proxy: Proxy | None = None
    state: str = "down"  # up, stopped (SIGSTOP), down
    gen: int = 0  # bumped on every change of state: a probe across one is discarded
    disturbed: float = 0.0  # monotonic time of the last disturbance (kill, stop, outage)
    busy: bool = False  # a disturbance is in progress (at most one per node)
    down_since: float | None = None  # killed at (monotonic), until it runs again
    longest_down: float = 0.0  # the longest time from a kill to running again, seconds
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.proc.node_id

    def mark(self, state: str | None = None, *, busy: bool | None = None) -> None:
        with self.lock:
            if state is not None:
                self.state = state
            if busy is not None:
                self.busy = busy
            self.gen += 1
            self.disturbed = time.monotonic()


@dataclass
class Chan:
    """One channel: who opened it, and every committed state the nodes reported."""

    cid: str
    app: str
    opener: Node
    peer: Node
    outcomes: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (p0, p1)
    seqs: dict[int, int] = field(default_factory=dict)  # node index -> newest seq seen
    max_seq: int = -1  # the newest seq any node ever reported as committed
    forced: tuple[int, tuple[int, int]] | None = None  # the newest move forced on L1
    closes: list[str] = field(default_factory=list)  # "coop by 1", "unilateral by 0", …
    in_close: int = 0  # close commands still waiting for their answer
    l1: str | None = None  # newest L1 status a node reported
    settled: tuple[int, int] | None = None
    view: dict[int, dict[str, Any]] = field(default_factory=dict)  # node index -> show

    def nodes(self) -> tuple[Node, Node]:
        return self.opener, self.peer

    def pair(self, by_node: dict[str, int]) -> tuple[int, int]:
        return by_node[self.opener.id], by_node[self.peer.id]

    @property
    def short(self) -> str:
        return self.cid[:10]


@dataclass
class Report:
    seed: int
    l1: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    worst_control_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        head = (
            f"soak seed={self.seed} l1={self.l1}: {self.seconds:.0f} s, {counts}; "
            f"worst control latency {self.worst_control_s * 1000:.0f} ms; "
            f"{len(self.violations)} violation(s)"
        )
        if not self.violations:
            return head
        lines = [head, "violations:"]
        lines += [f"  {v}" for v in self.violations]
        lines.append(f"event log (replay: python -m tests.soak --seed {self.seed} --l1 {self.l1}):")
        lines += [f"  {e}" for e in self.events]
        return "\n".join(lines)
