"""``check_l1_adapter``: one scenario per L1 rule of docs/design.md §5.

Each scenario drives real channel parties (a :class:`~bfs_smr.runtime.LocalPair` running
the payments app, or tic-tac-toe for force moves) on the L1 behind a harness, with fresh
parties and so fresh channel ids, so every scenario can share one chain.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._errors import L1Error, LocalError
from bfs_smr._l1 import L1ChannelStatus, L1EventKind
from bfs_smr._update import CommandEntry, SignedUpdate, Update
from bfs_smr.runtime import LocalPair, Party
from bfs_smr.testing._l1kit import FORCE_RULES, L1_RULES, WINDOW, Kit, L1Harness, L1RuleBroken

__all__ = ["check_l1_adapter"]

OPEN = L1ChannelStatus.OPEN
FUNDING = L1ChannelStatus.FUNDING
CLOSING = L1ChannelStatus.CLOSING
SETTLED = L1ChannelStatus.SETTLED


def check_l1_adapter(
    harness: L1Harness,
    *,
    rules: Iterable[str] | None = None,
    check_reasons: bool = False,
) -> list[str]:
    """Check that the L1 behind ``harness`` keeps every L1 rule (docs/design.md §5).

    Runs one scenario per rule of :data:`L1_RULES`, in that order, each with new
    parties; stops at the first broken rule. Force-move rules are checked only when the
    harness's adapters have ``supports_force_move``. Every refusal a scenario expects is
    also checked against ``L1-REJECT-L1ERROR``: an :class:`~bfs_smr.L1Error` with a reason
    that changes neither the channel nor any balance.

    Args:
        harness: the L1 to check (see :class:`L1Harness`).
        rules: check only these rules (names from :data:`L1_RULES`). Default: all.
        check_reasons: also require each refusal's reason to contain the words the
            bundled adapters use (``"not newer"``, ``"still open"`` …). Off by default:
            your adapter may word its reasons its own way.

    Returns:
        The names of the rules checked, in order.

    Raises:
        L1RuleBroken: an AssertionError naming the broken rule and what the L1 did.
        LocalError: ``rules`` names no such rule.
    """
    selected = set(L1_RULES) if rules is None else set(rules)
    unknown = sorted(selected - set(L1_RULES))
    if unknown:
        raise LocalError(f"no such L1 rule: {', '.join(unknown)}")
    kit = Kit(harness, check_reasons=check_reasons)
    can_force = kit.party()[1].supports_force_move
    checked = []
    for rule, scenario in SCENARIOS.items():
        if rule not in selected or (rule in FORCE_RULES and not can_force):
            continue
        kit.rule = rule
        try:
            scenario(kit)
        except L1RuleBroken:
            raise
        except L1Error as exc:
            raise L1RuleBroken(rule, f"a valid transaction was refused: {exc.reason}") from exc
        except Exception as exc:  # the scenario stopped: the rule it checks is the one broken
            raise L1RuleBroken(rule, f"the scenario failed: {type(exc).__name__}: {exc}") from exc
        checked.append(rule)
    return checked


# -- open -----------------------------------------------------------------------------------


def open_fresh_id(kit: Kit) -> None:
    pair = kit.pair()
    cid = pair.alice.l1.open(pair.params)
    kit.equal(cid, pair.params.channel_id, "the id open returns")
    kit.harness.fund(pair.params.participants[0], 1_000)
    kit.refused(pair, "a second open", "exists already", pair.alice.l1.open, pair.params)
    elsewhere = dataclasses.replace(pair.params, l1=b"another:l1")
    kit.refused(pair, "an open for another L1", "another L1", pair.alice.l1.open, elsewhere)
    other = kit.pair()
    _, mallory = kit.party(fund=1_000)
    mallory.track(other.params)
    what = "an open by a non-participant"
    accounts = [mallory.account]
    kit.refused(other, what, "only a participant", mallory.open, other.params, accounts=accounts)
    # The same parties open again under a fresh nonce: a new channel, the first untouched.
    parties = ((pair.alice.signer, pair.alice.l1), (pair.bob.signer, pair.bob.l1))
    second = kit.pair(parties=parties, nonce=1)
    kit.equal(second.alice.l1.open(second.params), second.params.channel_id, "a second id")
    kit.equal(kit.info(second).status, OPEN, "the second channel's status")
    kit.equal(kit.info(pair).locked, 1_000, "the first channel's locked value")


def open_locks(kit: Kit) -> None:
    pair = kit.opened()
    kit.equal(kit.values(pair), (0, 0), "balances after locking (1000, 0)")
    info = kit.info(pair)
    kit.equal((info.status, info.locked), (OPEN, 1_000), "status and locked value")
    kit.equal(kit.kinds(pair), [L1EventKind.OPENED], "events")
    # Two-sided funding, Bob's share in two top-ups.
    pair = kit.pair((10, 20))
    cid = pair.alice.l1.open(pair.params)
    kit.equal(kit.info(pair).status, FUNDING, "status with one share in")
    kit.equal(kit.values(pair), (0, 20), "balances with one share in")
    deposit = pair.bob.l1.deposit
    kit.refused(pair, "an overdeposit", "deposit must be a positive amount up to", deposit, cid, 21)
    deposit(cid, 5)
    info = kit.info(pair)
    kit.equal((info.status, info.locked), (FUNDING, 15), "status and locked after a top-up")
    kit.expect(info.deposited in (None, (10, 5)), f"deposited after a top-up: {info.deposited}")
    deposit(cid, 15)
    info = kit.info(pair)
    kit.equal((info.status, info.locked), (OPEN, 30), "status and locked when fully funded")
    kit.equal(kit.values(pair), (0, 0), "balances when fully funded")
    events = [L1EventKind.OPENED, L1EventKind.DEPOSITED, L1EventKind.DEPOSITED]
    kit.equal(kit.kinds(pair), events, "events")
    kit.refused(pair, "a deposit into an open channel", "not funding", deposit, cid, 1)
    # Either party opens; the other funds.
    pair = kit.pair((10, 20))
    pair.bob.l1.open(pair.params)
    kit.equal(kit.values(pair), (10, 0), "balances after Bob opened")
    pair.alice.l1.deposit(pair.params.channel_id, 10)
    kit.equal(kit.info(pair).status, OPEN, "status after Alice funded Bob's channel")
    kit.equal(kit.values(pair), (0, 0), "balances after Alice funded Bob's channel")


def open_covered(kit: Kit) -> None:
    # More than any party has (EVM parties hold gas money, 10**17), under 2**64.
    more = 10**18
    pair = kit.pair((more, 0), funds=(9, 0))
    kit.refused(
        pair, "an open beyond one's balance", "insufficient funds", pair.alice.l1.open, pair.params
    )
    kit.equal(pair.l1_view(pair.alice), None, "the channel after a refused open")
    kit.equal(kit.values(pair), (9, 0), "balances after a refused open")
    pair = kit.pair((10, more), funds=(10, 9))
    cid = pair.alice.l1.open(pair.params)
    kit.refused(
        pair, "a deposit beyond one's balance", "insufficient funds", pair.bob.l1.deposit, cid, more
    )
    kit.equal(kit.values(pair), (0, 9), "balances after a refused deposit")
    pair.alice.l1.cancel(cid)


def reject_l1error(kit: Kit) -> None:
    pair = kit.pair((10, 20))  # not on L1
    cid = pair.params.channel_id
    alice, bob = pair.alice.l1, pair.bob.l1
    calls: list[tuple[str, Callable[[], object]]] = [
        ("a deposit", partial(bob.deposit, cid, 20)),
        ("a settle", partial(alice.settle, cid)),
        ("a cancel", partial(alice.cancel, cid)),
        ("a query", partial(alice.channel, cid)),
    ]
    for what, call in calls:
        kit.refused(pair, f"{what} of a channel not on L1", "no such channel", call)
    alice.open(pair.params)
    for amount in (0, -1, True):
        what = f"a deposit of {amount!r}"
        kit.refused(pair, what, "deposit must be a positive amount up to", bob.deposit, cid, amount)
    alice.cancel(cid)


def update_valid(kit: Kit) -> None:
    pair = kit.opened()
    committed = kit.pay(pair, 100)
    close = pair.alice.l1.unilateral_close
    first, second = committed.signatures
    for signatures in ((first, None), (None, second)):
        half = SignedUpdate(committed.update, signatures)
        kit.refused(pair, "a close with a half-signed update", "signed by both", close, half)
    # Same two parties, two channels: a signature never carries over (I5).
    parties = ((pair.alice.signer, pair.alice.l1), (pair.bob.signer, pair.bob.l1))
    other = kit.pair(parties=parties, nonce=1)
    other.open()
    cid = other.params.channel_id
    moved = SignedUpdate(
        dataclasses.replace(committed.update, channel_id=cid), committed.signatures
    )
    kit.refused(other, "a close with another channel's update", "signed by both", close, moved)
    forged = dataclasses.replace(committed.update, outcome=(1_000, 1_000))
    digest = pair.alice.l1.format.digest(forged, forged.body())
    both = SignedUpdate(forged, (pair.alice.signer.sign(digest), pair.bob.signer.sign(digest)))
    words = "outcome does not pay out exactly the locked value"
    kit.refused(pair, "a close with an outcome that does not conserve", words, close, both)
    kit.equal(kit.info(pair).status, OPEN, "status after refused closes")


# -- close ----------------------------------------------------------------------------------


def coop_close(kit: Kit) -> None:
    pair = kit.opened()
    committed = kit.pay(pair, 250)
    coop = pair.alice.l1.cooperative_close
    kit.refused(pair, "a cooperative close with a non-final update", "final", coop, committed)
    kit.pay(pair, 50)
    kit.equal(pair.close_cooperatively(), (700, 300), "the payouts a cooperative close returns")
    kit.equal(kit.values(pair), (700, 300), "balances after a cooperative close")
    info = kit.info(pair)
    kit.equal((info.status, info.payouts), (SETTLED, (700, 300)), "status and payouts")
    kit.equal(kit.kinds(pair), [L1EventKind.OPENED, L1EventKind.SETTLED], "events")
    kit.equal(kit.events(pair)[-1].payouts, (700, 300), "the settled event's payouts")
    # Not before every deposit is in.
    pair = kit.pair((10, 20))
    pair.alice.chan.start()
    pair.pump()
    pair.alice.l1.open(pair.params)
    final = kit.final(pair)
    for what, call in (
        ("cooperative", pair.alice.l1.cooperative_close),
        ("unilateral", pair.alice.l1.unilateral_close),
    ):
        kit.refused(pair, f"a {what} close while funding", "channel is funding", call, final)
    pair.alice.l1.cancel(pair.params.channel_id)


def close_window(kit: Kit) -> None:
    pair = kit.opened()
    stale = kit.pay(pair, 100)
    deadline = pair.alice.l1.unilateral_close(stale)
    kit.equal(deadline, kit.now(pair) + WINDOW, "the deadline a unilateral close returns")
    info = kit.info(pair)
    registered = (info.status, info.registered_seq, info.deadline)
    kit.equal(registered, (CLOSING, stale.seq, deadline), "status, registered seq and deadline")
    event = kit.events(pair)[-1]
    got = (event.kind, event.seq, event.deadline)
    kit.equal(got, (L1EventKind.CLOSING_STARTED, stale.seq, deadline), "the closing event")
    kit.equal(kit.values(pair), (0, 0), "balances in the window")
    settle = partial(pair.bob.l1.settle, pair.params.channel_id)
    kit.refused(pair, "a settle in the window", "still open", settle)
    # A final update pays at once.
    pair = kit.opened()
    pair.alice.l1.unilateral_close(kit.final(pair))
    info = kit.info(pair)
    kit.equal((info.status, info.payouts), (SETTLED, (1_000, 0)), "a final unilateral close")
    kit.equal(kit.values(pair), (1_000, 0), "balances after a final unilateral close")


def close_reveals(kit: Kit) -> None:
    secret = os.urandom(32)
    pair = kit.pair(watch=secret)
    pair.open()
    kit.expect(pair.params.watch != b"", "the channel commits to a watch secret")
    stale = kit.pay(pair, 100)
    close = pair.alice.l1.unilateral_close
    words = "must reveal the channel's watch secret"
    kit.refused(pair, "a close without the watch secret", words, close, stale)
    for what, wrong in (
        ("another secret", os.urandom(32)),
        ("the commitment itself", pair.params.watch),
        ("a short secret", secret[:16]),
    ):
        kit.refused(pair, f"a close revealing {what}", words, close, stale, wrong)
    kit.equal(kit.info(pair).status, OPEN, "status after refused closes")
    # Anyone holding the update and the secret may close: a watchtower does.
    _, tower = kit.party()
    tower.track(pair.params)
    deadline = tower.unilateral_close(stale, secret)
    event = kit.events(pair)[-1]
    got = (event.kind, event.seq, event.deadline, event.reveal)
    want = (L1EventKind.CLOSING_STARTED, stale.seq, deadline, secret)
    kit.equal(got, want, "the closing event (with the secret it reveals)")
    kit.equal(kit.info(pair).status, CLOSING, "status after a close with the secret")
    # A final update still needs the secret, and then pays at once.
    pair = kit.pair(watch=secret)
    pair.open()
    final = kit.final(pair)
    close = pair.alice.l1.unilateral_close
    kit.refused(pair, "a final close without the watch secret", words, close, final)
    pair.bob.l1.unilateral_close(final, secret)
    kit.equal(kit.values(pair), (1_000, 0), "balances after a final close with the secret")
    # A channel that commits to nothing reveals nothing, whatever a close passes.
    pair = kit.opened()
    pair.alice.l1.unilateral_close(kit.pay(pair, 1), secret)
    kit.equal(kit.events(pair)[-1].reveal, None, "the reveal of a channel without a commitment")


def refute_newer(kit: Kit) -> None:
    pair = kit.opened()
    stale, newest, latest = (kit.pay(pair, amount) for amount in (100, 100, 50))
    alice, bob = pair.alice.l1, pair.bob.l1
    kit.refused(pair, "a refutation of an open channel", "not closing", bob.refute, stale)
    alice.unilateral_close(stale)
    kit.harness.advance(10)
    bob.refute(newest)
    info = kit.info(pair)
    kit.equal((info.status, info.registered_seq), (CLOSING, newest.seq), "after a refutation")
    kit.refused(pair, "a refutation with an older update", "not newer", alice.refute, stale)
    kit.refused(pair, "a refutation with the same update", "not newer", alice.refute, newest)
    kit.refused(pair, "a second close", "not open", alice.unilateral_close, stale)
    deadline = kit.info(pair).deadline
    assert deadline is not None
    kit.harness.advance(max(deadline - kit.now(pair), 0))
    kit.refused(pair, "a refutation after the window", "ended", bob.refute, latest)
    kit.equal(alice.settle(pair.params.channel_id), (800, 200), "the payouts of the newest")
    kit.equal(kit.values(pair), (800, 200), "balances after settling")
    kinds = [L1EventKind.OPENED, L1EventKind.CLOSING_STARTED, L1EventKind.REFUTED]
    kit.equal(kit.kinds(pair), [*kinds, L1EventKind.SETTLED], "events")
    # A final update in the window pays at once.
    pair = kit.opened()
    stale = kit.pay(pair, 1)
    final = kit.final(pair)
    pair.alice.l1.unilateral_close(stale)
    pair.bob.l1.refute(final)
    info = kit.info(pair)
    kit.equal((info.status, info.payouts), (SETTLED, (999, 1)), "a refutation with a final update")
    kit.equal(kit.values(pair), (999, 1), "balances after a final refutation")


def refute_keeps_deadline(kit: Kit) -> None:
    pair = kit.opened()
    updates = [kit.pay(pair, 100) for _ in range(3)]
    deadline = pair.alice.l1.unilateral_close(updates[0])
    for update in updates[1:]:
        kit.harness.advance(10)
        pair.bob.l1.refute(update)
        kit.equal(
            kit.info(pair).deadline, deadline, f"the deadline after refuting with seq {update.seq}"
        )
        event = kit.events(pair)[-1]
        kit.equal(
            (event.kind, event.deadline), (L1EventKind.REFUTED, deadline), "the refuted event"
        )
    kit.harness.advance(max(deadline - kit.now(pair), 0))
    kit.equal(
        pair.alice.l1.settle(pair.params.channel_id), (700, 300), "a settle at the first deadline"
    )


# -- force moves (optional) ----------------------------------------------------------------


def play(pair: LocalPair, cells: list[int]) -> None:
    for cell in cells:
        mover = pair.app.to_move(pair.alice.chan.state)
        assert mover is not None, "the game is over"
        pair.parties[mover].chan.issue({"cell": cell})
        pair.pump()


def force(party: Party, command: Any) -> tuple[SignedUpdate, int]:
    """``party`` forces ``command`` from its force base; returns the move and deadline."""
    base, state = party.chan.force_base
    move = party.chan.force_move(command)
    encoded = party.chan.format.encode_state(party.chan.app, state)
    return move, party.l1.force_move(encoded, move, base)


def moved(app: StateMachine[Any], state: Any, actor: int, command: Any) -> Any:
    """The state after ``actor``'s ``command``, or ``state`` itself if the app refuses it
    (a move built illegal on purpose)."""
    try:
        return app.apply(state, command, actor)
    except Exception:  # noqa: BLE001 - an illegal move, built on purpose
        return state


def signed_move(
    pair: LocalPair, by: Party, *, base: SignedUpdate, state: Any, actor: int, command: Any
) -> SignedUpdate:
    """A move after ``base`` (whose state is ``state``) by ``actor``, signed by ``by``
    alone, whatever the app says of it (an illegal move keeps the state: :func:`moved`)."""
    app = pair.app
    after = moved(app, state, actor, command)
    update = Update(
        channel_id=pair.params.channel_id,
        seq=base.seq + 1,
        prev_hash=base.update.entry_hash(),
        app_id=pair.params.app_id,
        commands=(CommandEntry(actor, 1_000 + base.seq, command),),
        state_hash=by.l1.format.state_hash(app, after),
        outcome=app.outcome(after),
    )
    signature = by.signer.sign(by.l1.format.digest(update, update.body()))
    return SignedUpdate(update, (signature, None) if by is pair.alice else (None, signature))


def force_move(kit: Kit) -> None:
    pair = kit.opened((50, 50), app="tictactoe")
    play(pair, [4, 0])  # Alice (X) to move
    closed = pair.alice.chan.committed
    assert closed is not None
    first_deadline = pair.alice.l1.unilateral_close(closed)
    kit.equal(kit.info(pair).forced, None, "forced, after a unilateral close")
    kit.harness.advance(20)
    move, deadline = force(pair.alice, {"cell": 8})
    kit.equal(deadline, kit.now(pair) + WINDOW, "the deadline a force move returns")
    info = kit.info(pair)
    got = (info.registered_seq, info.deadline, info.forced)
    kit.equal(got, (move.seq, deadline, move), "registered seq, deadline and forced")
    event = kit.events(pair)[-1]
    seen = (event.kind, event.seq, event.deadline)
    kit.equal(seen, (L1EventKind.FORCE_MOVED, move.seq, deadline), "the force-moved event")
    pair.bob.chan.adopt_forced_move(move)
    kit.harness.advance(max(first_deadline - kit.now(pair), 0))
    settle = partial(pair.alice.l1.settle, pair.params.channel_id)
    kit.refused(pair, "a settle after the first window, in the force move's", "still open", settle)
    answer, _ = force(pair.bob, {"cell": 2})  # Bob answers with a force move of his own
    kit.equal(kit.info(pair).forced, answer, "forced, after the answer")
    kit.harness.advance(WINDOW)
    kit.equal(pair.alice.l1.settle(pair.params.channel_id), (0, 100), "silence loses")
    kit.equal(kit.values(pair), (0, 100), "balances after settling a forced game")


def force_move_checked(kit: Kit) -> None:
    pair = kit.opened((50, 50), app="tictactoe")
    play(pair, [4, 0])  # Alice (X) to move
    app, alice, bob = pair.app, pair.alice, pair.bob
    base, state = alice.chan.committed, alice.chan.state
    assert base is not None
    play(pair, [8])
    newest = kit.committed(pair)  # doubly signed, one above the base
    fmt = alice.l1.format
    encoded = fmt.encode_state(app, state)
    legal = signed_move(pair, alice, base=base, state=state, actor=0, command={"cell": 1})
    post = alice.l1.force_move
    kit.refused(pair, "a force move on an open channel", "not closing", post, encoded, legal, base)
    alice.l1.unilateral_close(base)
    wrong_state = fmt.encode_state(app, app.initial_state(pair.params))
    kit.refused(
        pair, "a force move from another state", "registered", post, wrong_state, legal, base
    )
    by_bob = signed_move(pair, bob, base=base, state=state, actor=1, command={"cell": 1})
    what = "a force move by the party not to move"
    kit.refused(pair, what, "party to move", bob.l1.force_move, encoded, by_bob, base)
    misplaced = SignedUpdate(legal.update, (None, legal.signatures[0]))
    what = "a force move signed by the other party"
    kit.refused(pair, what, "party to move", post, encoded, misplaced, base)
    illegal = signed_move(pair, alice, base=base, state=state, actor=0, command={"cell": 4})
    kit.refused(pair, "an illegal force move", "illegal move", post, encoded, illegal, base)
    kit.equal(kit.info(pair).registered_seq, base.seq, "registered seq after refused force moves")
    post(encoded, legal, base)  # a move other than the one both signed, at the same seq
    bob.l1.refute(newest)  # doubly signed beats forced at the same seq
    info = kit.info(pair)
    kit.equal(
        (info.registered_seq, info.forced), (newest.seq, None), "after refuting a forced move"
    )
    kit.harness.advance(WINDOW)
    kit.equal(bob.l1.settle(pair.params.channel_id), newest.update.outcome, "the payouts")
    kinds = [L1EventKind.FORCE_MOVED, L1EventKind.REFUTED, L1EventKind.SETTLED]
    kit.equal(kit.kinds(pair)[-3:], kinds, "events")


# -- settle, double pay, stuck value ------------------------------------------------------


def settle_once(kit: Kit) -> None:
    pair = kit.opened((500, 500))
    kit.pay(pair, 200, by="bob")
    cid = pair.params.channel_id
    settle = partial(pair.alice.l1.settle, cid)
    kit.refused(pair, "a settle of an open channel", "not closing", settle)
    deadline = pair.bob.l1.unilateral_close(kit.committed(pair))
    kit.equal(kit.values(pair), (0, 0), "balances in the window")
    kit.refused(pair, "a settle in the window", "still open", settle)
    kit.harness.advance(max(deadline - kit.now(pair), 0))
    kit.equal(settle(), (700, 300), "the payouts settle returns")
    kit.equal(kit.values(pair), (700, 300), "balances after settling")
    info = kit.info(pair)
    kit.equal((info.status, info.payouts), (SETTLED, (700, 300)), "status and payouts")
    kit.equal(kit.events(pair)[-1].payouts, (700, 300), "the settled event's payouts")
    kit.refused(pair, "a second settle", "settled", pair.bob.l1.settle, cid)


def no_double_pay(kit: Kit) -> None:
    pair = kit.opened()
    kit.pay(pair, 300)
    pair.close_cooperatively()
    final = pair.alice.final
    assert final is not None
    alice, bob = pair.alice.l1, pair.bob.l1
    cid = pair.params.channel_id
    calls: list[tuple[str, Callable[[], object]]] = [
        ("a second cooperative close", partial(bob.cooperative_close, final)),
        ("a unilateral close", partial(bob.unilateral_close, final)),
        ("a refutation", partial(bob.refute, final)),
        ("a settle", partial(alice.settle, cid)),
        ("a deposit", partial(alice.deposit, cid, 1)),
        ("a cancel", partial(alice.cancel, cid)),
    ]
    kit.harness.fund(pair.params.participants[0], 1)
    for what, call in calls:
        kit.refused(pair, f"{what} of a paid-out channel", "settled", call)
    kit.equal(kit.values(pair), (701, 300), "balances after the refusals")


def no_stuck_value(kit: Kit) -> None:
    pair = kit.pair((10, 20))
    cid = pair.alice.l1.open(pair.params)
    kit.equal(kit.values(pair), (0, 20), "balances with one share in")
    _, mallory = kit.party()
    mallory.track(pair.params)
    kit.refused(pair, "a cancel by a non-participant", "only a participant", mallory.cancel, cid)
    pair.bob.l1.cancel(cid)  # by the party that deposited nothing
    kit.equal(kit.values(pair), (10, 20), "balances after a cancel")
    kit.equal(kit.info(pair).status, L1ChannelStatus.CANCELLED, "status after a cancel")
    kit.equal(kit.kinds(pair)[-1], L1EventKind.CANCELLED, "the last event")
    kit.refused(pair, "a deposit after a cancel", "cancelled", pair.bob.l1.deposit, cid, 20)
    kit.refused(pair, "a second cancel", "cancelled", pair.alice.l1.cancel, cid)
    pair = kit.opened()
    cancel = partial(pair.bob.l1.cancel, pair.params.channel_id)
    kit.refused(pair, "a cancel of an open channel", "only a channel still funding", cancel)
    # Through a dispute, every locked unit reaches someone.
    pair = kit.opened((400, 600))
    stale = kit.pay(pair, 100)
    kit.pay(pair, 300, by="bob")
    pair.alice.l1.unilateral_close(stale)
    pair.bob.l1.refute(kit.committed(pair))
    kit.harness.advance(WINDOW)
    payouts = pair.bob.l1.settle(pair.params.channel_id)
    kit.equal(payouts, (600, 400), "the payouts of a dispute")
    kit.equal(kit.values(pair), (600, 400), "balances after a dispute")


#: One scenario per rule, in the order of :data:`L1_RULES`.
SCENARIOS: dict[str, Callable[[Kit], None]] = {
    "L1-OPEN-FRESH-ID": open_fresh_id,
    "L1-OPEN-LOCKS": open_locks,
    "L1-OPEN-COVERED": open_covered,
    "L1-REJECT-L1ERROR": reject_l1error,
    "L1-UPDATE-VALID": update_valid,
    "L1-COOP-CLOSE": coop_close,
    "L1-CLOSE-WINDOW": close_window,
    "L1-CLOSE-REVEALS": close_reveals,
    "L1-REFUTE-NEWER": refute_newer,
    "L1-REFUTE-KEEPS-DEADLINE": refute_keeps_deadline,
    "L1-FORCE-MOVE": force_move,
    "L1-FORCE-MOVE-CHECKED": force_move_checked,
    "L1-SETTLE-ONCE": settle_once,
    "L1-NO-DOUBLE-PAY": no_double_pay,
    "L1-NO-STUCK-VALUE": no_stuck_value,
}
assert list(SCENARIOS) == list(L1_RULES), "one scenario per rule, in the rules' order"
