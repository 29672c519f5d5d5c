"""Soak test: real node processes under kill -9, SIGSTOP, L1 outages and closes of every kind.

Several ``bfs-smr node`` processes (tests/nodeproc.py) open channels with each other and a
driver does random things to them, from one seeded generator: payments from either side,
tic-tac-toe moves, cooperative and unilateral closes from either side, forced moves (the
peer paused while a player closes with its move pending), ``kill -9`` and restart, SIGSTOP
and SIGCONT, and, on the EVM, outages of a node's RPC endpoint (each node reaches anvil
through its own TCP proxy on loopback, which the driver cuts and restores). After every
restart the restarted node opens a new channel. At the end every channel is closed and the
run is checked. Invariants:

* **settlement**: every channel settles (or is cancelled) on L1, paying the newest outcome
  either node ever reported as committed (``channel list``), or the newest move forced on
  L1 if that is newer; no node's committed seq ever goes back; no two outcomes at one seq;
* **conservation**: no value is created or lost on L1 (local: balances + locked, sampled
  throughout; EVM: the contract's balance + the nodes' balances + the fees they paid);
* **links**: after every restart the restarted node is linked again, within
  :data:`LINK_DEADLINE`, with every peer it shares an unsettled channel with, and a new
  channel opens; between honest nodes no log reports ``peer broke the protocol``;
* **control**: every running node's control endpoint answers ``status`` within one second,
  probed from a thread throughout (the worst latency is reported);
* **liveness**: payments, moves and opens between two nodes that were undisturbed for
  :data:`QUIET` seconds succeed; a unilateral close shows on L1 within
  :data:`REGISTER_DEADLINE` if its node is undisturbed; no node exits on its own; no
  background task dies; no control command answers ``internal error``.

Run it by command, any length::

    python -m tests.soak --minutes 30 --seed 7 --l1 local
    python -m tests.soak --seconds 90 --seed 7 --l1 evm

It prints a summary, and on a violation the seed, the violations and a compact event log
(the same seed replays the same choices; timings differ). Exit code 1 on a violation.
"""

from .harness import Soak
from .model import Report

__all__ = ["Report", "Soak"]
