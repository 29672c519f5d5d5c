"""The bundled demos: payments, counter, tic-tac-toe and the dispute paths.

Each runs two real protocol parties (every signature made and verified, every update
re-executed by both) over the embedded L1 and returns a result dict for the CLI.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bfs_smr._errors import LocalError
from bfs_smr._reaction import Intent, Refute
from bfs_smr._update import verify_log
from bfs_smr.apps.tictactoe import winner
from bfs_smr.runtime._local import LocalPair, evm_pair, memory_pair

__all__ = ["Progress", "demo_counter", "demo_dispute", "demo_payments", "demo_tictactoe"]

#: progress(done, total) — called now and then during long runs.
Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


@dataclass
class _World:
    chain: Any
    pair: LocalPair


def _world(
    app_name: str, deposits: tuple[int, int], *, keep_log: bool = True, window: int = 3_600
) -> _World:
    chain, pair = memory_pair(app_name, deposits, challenge_window=window, keep_log=keep_log)
    return _World(chain, pair)


def _check_rpc(rpc: str | None) -> None:
    """Refuse, in one line, an RPC URL where no EVM node answers."""
    if rpc is None:
        return
    try:
        from bfs_smr.adapters.evm import connect
    except ImportError:
        raise LocalError("the EVM L1 needs the evm extra: pip install 'bfs-smr[evm]'") from None
    connect(rpc)


def _evm_world(deposits: tuple[int, int], rpc: str | None, key: str | None) -> _World:
    try:
        secret = bytes.fromhex(key) if key else None
    except ValueError:
        raise LocalError("--key must be a private key in hex") from None
    _check_rpc(rpc)
    chain, pair = evm_pair("payments", deposits, rpc=rpc, alice_secret=secret)
    return _World(chain, pair)


def _l1_transactions(world: _World) -> int:
    if hasattr(world.chain, "transactions"):
        count: int = world.chain.transactions
        return count
    adapters: list[Any] = [p.l1 for p in world.pair.parties]
    return sum(len(a.receipts) for a in adapters)


def _result(
    app: str, updates: int, world: _World, payouts: dict[str, int], seconds: float
) -> dict[str, Any]:
    return {
        "app": app,
        "updates": updates,
        "l1_transactions": _l1_transactions(world),
        "locked": world.pair.params.locked,
        "payouts": payouts,
        "seconds": round(seconds, 6),
        "updates_per_second": round(updates / seconds, 1) if seconds > 0 else None,
    }


def _payouts(world: _World) -> dict[str, int]:
    """What L1 paid each party of the world's channel, as Alice's adapter reads it."""
    info = world.pair.alice.l1.channel(world.pair.params.channel_id)
    out = info.payouts or (0, 0)
    return {"alice": out[0], "bob": out[1]}


def demo_payments(
    payments: int = 10_000,
    amount: int = 1,
    deposit: int | None = None,
    *,
    progress: Progress = _no_progress,
    verify: bool = True,
    l1: str = "memory",
    rpc: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Alice deposits, pays Bob ``payments`` times ``amount``, both close cooperatively.

    Args:
        l1: ``memory`` (the embedded L1) or ``evm`` (the adjudicator contract on the
            embedded py-evm chain, or on the node at ``rpc``; ``key`` is Alice's key).

    Raises:
        LocalError: non-positive numbers, or payments that exceed the deposit.
    """
    if payments <= 0:
        raise LocalError("--payments must be at least 1")
    if amount <= 0:
        raise LocalError("--amount must be at least 1")
    total = payments * amount
    if deposit is None:
        deposit = 2 * total
    if deposit <= 0:
        raise LocalError("--deposit must be at least 1")
    if total > deposit:
        raise LocalError(
            f"{payments} payments of {amount} need {total}, more than the deposit {deposit}"
        )
    if l1 == "evm":
        world = _evm_world((deposit, 0), rpc, key)
    else:
        world = _world("payments", (deposit, 0), keep_log=verify)
    pair = world.pair
    pair.open()
    alice = pair.alice.chan
    step = max(1, min(500, payments // 100))
    start = time.perf_counter()
    for i in range(payments):
        alice.issue({"pay": amount})
        if i % 64 == 63:
            pair.pump()
        if i % step == step - 1:
            progress(i + 1, payments)
    pair.pump()
    seconds = time.perf_counter() - start
    progress(payments, payments)
    paid = pair.close_cooperatively()
    if verify:  # both logs verify from the opening update: links, signatures, replay
        for party in pair.parties:
            verify_log(pair.params, pair.app, party.l1.format, party.log)
    committed = pair.bob.commits  # what Bob saw doubly signed
    result = _result("payments", committed, world, {"alice": paid[0], "bob": paid[1]}, seconds)
    result["l1"] = l1
    return result


def demo_counter(
    increments: int = 1_000, deposit: int = 100, *, progress: Progress = _no_progress
) -> dict[str, Any]:
    """Alice and Bob increment a shared counter in turn, then close; deposits come back."""
    if increments <= 0:
        raise LocalError("--increments must be at least 1")
    if deposit < 0:
        raise LocalError("--deposit must not be negative")
    world = _world("counter", (deposit, deposit))
    pair = world.pair
    pair.open()
    start = time.perf_counter()
    for i in range(increments):
        (pair.alice if i % 2 == 0 else pair.bob).chan.issue({"inc": 1})
        if i % 32 == 31:
            pair.pump()
            progress(i + 1, increments)
    pair.pump()
    seconds = time.perf_counter() - start
    progress(increments, increments)
    count = pair.alice.chan.state[0]
    pair.close_cooperatively(by=pair.bob)
    result = _result("counter", pair.alice.commits, world, _payouts(world), seconds)
    result["count"] = count
    return result


def _play(
    pair: LocalPair, rng: random.Random, stop: Callable[[], bool] = lambda: False
) -> list[int]:
    """Both players make random legal moves until the game ends (or ``stop()``)."""
    app = pair.app
    moves = []
    while not app.is_final(pair.alice.chan.state) and not stop():
        state = pair.alice.chan.state
        mover = pair.parties[state[1]]
        cell = rng.choice([i for i, c in enumerate(state[0]) if c == 0])
        mover.chan.issue({"cell": cell})
        pair.pump()
        moves.append(cell)
    return moves


def demo_tictactoe(stake: int = 100, seed: int | None = None) -> dict[str, Any]:
    """A whole game between random players, then a cooperative close."""
    if stake <= 0:
        raise LocalError("--stake must be at least 1")
    rng = random.Random(seed)
    world = _world("tictactoe", (stake, stake))
    pair = world.pair
    pair.open()
    start = time.perf_counter()
    moves = _play(pair, rng)
    seconds = time.perf_counter() - start
    final_state = pair.alice.chan.state
    pair.close_cooperatively()
    result = _result("tictactoe", len(moves), world, _payouts(world), seconds)
    won = winner(final_state[0])
    result["result"] = "draw" if won is None else ("alice" if won == 0 else "bob") + " wins"
    result["moves"] = moves
    result["board"] = list(final_state[0])
    return result


def _dispute_world(app: str, deposits: tuple[int, int], l1: str, rpc: str | None) -> _World:
    if l1 == "evm":
        _check_rpc(rpc)
        chain, pair = evm_pair(app, deposits, rpc=rpc, challenge_window=_DISPUTE_WINDOW)
        return _World(chain, pair)
    return _world(app, deposits, window=_DISPUTE_WINDOW)


#: The challenge window of the dispute demo's channels, in seconds of L1 time (the demo
#: moves the L1's clock on; nobody waits).
_DISPUTE_WINDOW = 600


def demo_dispute(
    seed: int | None = None, *, l1: str = "memory", rpc: str | None = None
) -> dict[str, Any]:
    """Both dispute paths, on the embedded L1 or on the EVM adjudicator.

    1. Payments: Alice pays Bob, then closes unilaterally with a stale update; Bob's
       watcher refutes with his newest update inside the window; L1 pays by the newest.
    2. Tic-tac-toe: Bob goes silent when Alice moves; Alice closes with the newest
       doubly-signed state, forces her move on L1, Bob lets his window pass, Alice settles
       and takes the pot.

    Args:
        l1: ``memory`` (the embedded L1) or ``evm`` (the adjudicator and the tic-tac-toe
            rules contract on the embedded py-evm chain, or on the node at ``rpc``).

    Returns:
        The figures, and ``story``: what happened, in sentences.
    """
    if l1 not in ("memory", "evm"):
        raise LocalError(f"--l1 must be memory or evm, not {l1!r}")
    if rpc and l1 != "evm":
        raise LocalError("--rpc goes with --l1 evm")
    start = time.perf_counter()
    rng = random.Random(seed)
    story: list[str] = []
    where = "the EVM adjudicator" if l1 == "evm" else "the embedded L1"
    # -- 1. stale close, refuted -------------------------------------------------------
    w1 = _dispute_world("payments", (1_000, 0), l1, rpc)
    pair = w1.pair
    if not pair.alice.l1.supports_force_move:
        raise LocalError(f"{where} here has no force moves: the demo's game cannot be played")
    pair.open()
    pair.alice.chan.issue({"pay": 100})
    pair.pump()
    stale = pair.alice.chan.committed  # Alice keeps this one: Bob holds 100 in it
    assert stale is not None
    for _ in range(5):
        pair.alice.chan.issue({"pay": 50})
    pair.pump()
    newest = pair.bob.chan.committed
    assert newest is not None
    story.append(
        f"Payments on {where}: Alice locked 1,000 and paid Bob 100, then 5 x 50 more; "
        f"both signed seq {newest.seq}, where Bob holds 350."
    )
    pair.alice.l1.unilateral_close(stale)  # the cheat goes around the policy
    story.append(
        f"Alice cheated: she closed on L1 alone with the stale seq {stale.seq}, "
        "where Bob holds only 100."
    )
    # Bob's watcher looks at the L1: the policy answers a stale close with his newest.
    refuted = any(isinstance(action, Refute) for action in pair.react(pair.bob))
    if refuted:
        story.append(
            f"Bob's watcher refuted it within the {_DISPUTE_WINDOW} s window with seq "
            f"{newest.seq}, which Alice had signed too."
        )
    w1.chain.advance(_DISPUTE_WINDOW + 1)
    pair.react(pair.bob)  # the window is over: settle
    stale_payouts = _payouts(w1)
    by = newest if tuple(stale_payouts.values()) == tuple(newest.update.outcome) else stale
    story.append(
        f"The window passed and L1 paid by seq {by.seq}: Alice "
        f"{stale_payouts['alice']:,}, Bob {stale_payouts['bob']:,}."
        + (" The cheat gained nothing." if by is newest else "")
    )
    stale_part: dict[str, Any] = {
        "stale_seq": stale.seq,
        "newest_seq": newest.seq,
        "refuted": refuted,
        "payouts": stale_payouts,
        "l1_transactions": _l1_transactions(w1),
    }
    # -- 2. silent player, force move --------------------------------------------------
    w2 = _dispute_world("tictactoe", (100, 100), l1, rpc)
    game = w2.pair
    game.open()
    # Play until it is Alice's turn again and she can still move without ending the game.
    _play(game, rng, stop=lambda: len([c for c in game.alice.chan.state[0] if c]) >= 2)
    state = game.alice.chan.state
    assert state[1] == 0
    cell = rng.choice([i for i, c in enumerate(state[0]) if c == 0])
    game.silenced.add("bob")  # Bob stops answering
    game.alice.chan.issue({"cell": cell})
    game.pump()
    registered = game.alice.chan.committed
    assert registered is not None
    story.append(
        f"Tic-tac-toe on {where}, 100 staked each: after {registered.seq} moves signed "
        f"by both, Alice played cell {cell} and Bob went silent: he never counter-signed it."
    )
    game.react(game.alice, Intent(unilateral=True))  # closes with the newest update
    game.react(game.alice)  # forces the very move Bob never counter-signed (I1)
    forced = game.l1_view(game.alice)
    assert forced is not None and forced.registered_seq is not None
    story.append(
        f"Alice closed on L1 alone with seq {registered.seq} (her move there: closing on "
        f"it alone would make her forfeit) and forced her move on L1 as seq "
        f"{forced.registered_seq}, checked by the app's rules: Bob to move."
    )
    w2.chain.advance(_DISPUTE_WINDOW + 1)  # Bob's window passes in silence
    game.react(game.alice)  # settle
    force_payouts = _payouts(w2)
    story.append(
        "Bob did not answer within the window"
        + (", so he forfeits" if force_payouts == {"alice": 200, "bob": 0} else "")
        + f": L1 paid Alice {force_payouts['alice']:,}, Bob {force_payouts['bob']:,}."
    )
    force_part: dict[str, Any] = {
        "moves_signed_by_both": registered.seq,
        "forced_seq": forced.registered_seq,
        "payouts": force_payouts,
        "l1_transactions": _l1_transactions(w2),
    }
    seconds = time.perf_counter() - start
    payouts = {name: stale_payouts[name] + force_payouts[name] for name in ("alice", "bob")}
    updates = pair.bob.commits + game.alice.commits
    return {
        "app": "dispute",
        "l1": l1,
        "updates": updates,
        "l1_transactions": _l1_transactions(w1) + _l1_transactions(w2),
        "locked": pair.params.locked + game.params.locked,
        "payouts": payouts,
        "seconds": round(seconds, 6),
        "updates_per_second": round(updates / seconds, 1) if seconds > 0 else None,
        "stale_close": stale_part,
        "force_move": force_part,
        "story": story,
    }
