"""The L1 reaction policy (bfs_smr._reaction.react), over its whole input space.

A table of named cases pins every rule (seq 0, restarts and stale views included); then
Hypothesis draws any channel facts, any L1 view of any status, any time and any intent,
and checks what must hold of every answer; last, a model L1 driven by both parties'
reactions alone shows that they converge: funded exactly, closed, settled, no value made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bfs_smr import CommandEntry, L1ChannelInfo, L1ChannelStatus, SignedUpdate, Update
from bfs_smr._reaction import (
    CLOSE_GRACE,
    AdoptForced,
    Cancel,
    ChannelFacts,
    CloseCooperatively,
    CloseUnilaterally,
    Deposit,
    ForceMove,
    Intent,
    L1Action,
    Open,
    Refute,
    Settle,
    own_deposit_missing,
    react,
)

CID = bytes(32)
S = L1ChannelStatus


def upd(seq: int, *, final: bool = False, actor: int = 0, tag: int = 0) -> SignedUpdate:
    """A stand-in update: the policy reads its seq, final flag, hash and first actor."""
    update = Update(
        channel_id=CID,
        seq=seq,
        prev_hash=bytes(32),
        app_id="test",
        commands=(CommandEntry(actor=actor, ref=tag, command={"pay": tag}),),
        state_hash=bytes([tag % 256]) * 32,
        outcome=(60, 40),
        final=final,
    )
    return SignedUpdate(update=update, signatures=(b"a", b"b"))


def facts(
    index: int = 0,
    newest: SignedUpdate | None = None,
    deposits: tuple[int, int] = (500, 100),
    **kw: Any,
) -> ChannelFacts:
    return ChannelFacts(index=index, deposits=deposits, newest=newest, **kw)


def view(status: S, **kw: Any) -> L1ChannelInfo:
    fields: dict[str, Any] = {
        "channel_id": CID,
        "locked": 600,
        "registered_seq": None,
        "deadline": None,
        "payouts": None,
    }
    fields.update(kw)
    return L1ChannelInfo(status=status, **fields)


NONE = Intent()
CLOSE = Intent(close=True)
UNI = Intent(unilateral=True)
U0, U3, U5 = upd(0), upd(3), upd(5)
FINAL = upd(6, final=True)
PEER_FORCED = upd(4, actor=1, tag=9)  # a move participant 1 forced after seq 3
OWN_FORCED = upd(4, actor=0, tag=9)

CASES: list[tuple[str, ChannelFacts, L1ChannelInfo | None, int, Intent, list[L1Action]]] = [
    # -- not on L1 --
    ("opener opens once the opening update is signed", facts(0, U0), None, 0, NONE, [Open()]),
    ("opener waits for the opening update", facts(0, None), None, 0, NONE, []),
    ("the other party never opens", facts(1, U0), None, 0, NONE, []),
    ("no open after a close was asked", facts(0, U0), None, 0, CLOSE, []),
    ("no open after a unilateral close was asked", facts(0, U0), None, 0, UNI, []),
    # -- funding: each party deposits exactly its own share still missing --
    (
        "follower deposits its share",
        facts(1, U0),
        view(S.FUNDING, locked=500, deposited=(500, 0)),
        0,
        NONE,
        [Deposit(amount=100)],
    ),
    (
        "a partial deposit is completed, never exceeded",
        facts(1, U0),
        view(S.FUNDING, locked=540, deposited=(500, 40)),
        0,
        NONE,
        [Deposit(amount=60)],
    ),
    (
        "the opener has nothing more to deposit",
        facts(0, U0),
        view(S.FUNDING, locked=500, deposited=(500, 0)),
        0,
        NONE,
        [],
    ),
    (
        "own share, not everything missing (view without per-party deposits)",
        facts(1, U0),
        view(S.FUNDING, locked=0),
        0,
        NONE,
        [Deposit(amount=100)],
    ),
    (
        "a deposit already in is not repeated (stale cached status, fresh view)",
        facts(1, U0),
        view(S.FUNDING, locked=100, deposited=(0, 100), payouts=None),
        0,
        NONE,
        [],
    ),
    ("a close while funding cancels", facts(1, U0), view(S.FUNDING), 0, CLOSE, [Cancel()]),
    ("a unilateral close while funding cancels", facts(0, U0), view(S.FUNDING), 0, UNI, [Cancel()]),
    # -- open --
    ("nothing to do while open", facts(0, U5), view(S.OPEN), 0, NONE, []),
    (
        "unilateral close registers the newest update",
        facts(1, U5),
        view(S.OPEN),
        0,
        UNI,
        [CloseUnilaterally(update=U5)],
    ),
    (
        "unilateral close at seq 0",
        facts(1, U0),
        view(S.OPEN),
        0,
        UNI,
        [CloseUnilaterally(update=U0)],
    ),
    ("unilateral close with nothing signed", facts(1, None), view(S.OPEN), 0, UNI, []),
    ("a cooperative close waits for the final update", facts(0, U5), view(S.OPEN), 0, CLOSE, []),
    (
        "the closer submits the final update at once",
        facts(0, FINAL, final_age=0.0),
        view(S.OPEN),
        0,
        CLOSE,
        [CloseCooperatively(update=FINAL)],
    ),
    (
        "a final update beats a unilateral close",
        facts(0, FINAL, final_age=0.0),
        view(S.OPEN),
        0,
        UNI,
        [CloseCooperatively(update=FINAL)],
    ),
    (
        "the other party gives the closer time",
        facts(1, FINAL, final_age=0.5),
        view(S.OPEN),
        0,
        NONE,
        [],
    ),
    (
        "then submits the final update itself",
        facts(1, FINAL, final_age=CLOSE_GRACE),
        view(S.OPEN),
        0,
        NONE,
        [CloseCooperatively(update=FINAL)],
    ),
    # -- closing --
    (
        "a stale close is refuted",
        facts(1, U3),
        view(S.CLOSING, registered_seq=0, deadline=100),
        50,
        NONE,
        [Refute(update=U3)],
    ),
    (
        "a close at seq 0 with seq 0 as newest is not refuted",
        facts(1, U0),
        view(S.CLOSING, registered_seq=0, deadline=100),
        50,
        NONE,
        [],
    ),
    (
        "a close at seq 0 settles when its window ends",
        facts(1, U0),
        view(S.CLOSING, registered_seq=0, deadline=100),
        100,
        NONE,
        [Settle()],
    ),
    (
        "the newest registered: settle after the window",
        facts(0, U5),
        view(S.CLOSING, registered_seq=5, deadline=100),
        101,
        NONE,
        [Settle()],
    ),
    (
        "after the window a refute is too late: settle",
        facts(1, U5),
        view(S.CLOSING, registered_seq=3, deadline=100),
        100,
        NONE,
        [Settle()],
    ),
    (
        "restarted without its store's newest update: nothing better to show, it settles",
        facts(1, None),
        view(S.CLOSING, registered_seq=3, deadline=100),
        200,
        NONE,
        [Settle()],
    ),
    (
        "a move the peer forced is adopted",
        facts(0, U3, forced_seen=3),
        view(S.CLOSING, registered_seq=4, deadline=100, forced=PEER_FORCED),
        50,
        NONE,
        [AdoptForced(update=PEER_FORCED)],
    ),
    (
        "a forced move is adopted once",
        facts(0, U3, forced_seen=4),
        view(S.CLOSING, registered_seq=4, deadline=100, forced=PEER_FORCED),
        50,
        NONE,
        [],
    ),
    (
        "after a restart the forced move is looked at again",
        facts(0, U3),
        view(S.CLOSING, registered_seq=4, deadline=100, forced=PEER_FORCED),
        50,
        NONE,
        [AdoptForced(update=PEER_FORCED)],
    ),
    (
        "its own forced move is not adopted",
        facts(0, U3, forced_seen=3),
        view(S.CLOSING, registered_seq=4, deadline=100, forced=OWN_FORCED),
        50,
        NONE,
        [],
    ),
    (
        "an update forced at a doubly-signed seq is refuted",
        facts(0, upd(4, actor=1, tag=1)),
        view(S.CLOSING, registered_seq=4, deadline=100, forced=PEER_FORCED),
        50,
        NONE,
        [Refute(update=upd(4, actor=1, tag=1))],
    ),
    (
        "the move it signed and the peer ignored is forced",
        facts(0, U3, move_signed=True),
        view(S.CLOSING, registered_seq=3, deadline=100),
        50,
        NONE,
        [ForceMove()],
    ),
    (
        "no force move on an older registered update (refute first)",
        facts(0, U5, move_signed=True),
        view(S.CLOSING, registered_seq=3, deadline=100),
        50,
        NONE,
        [Refute(update=U5)],
    ),
    (
        "a close asked while closing waits",
        facts(0, U3),
        view(S.CLOSING, registered_seq=3, deadline=9),
        5,
        UNI,
        [],
    ),
    # -- finished --
    ("settled: nothing", facts(0, U5), view(S.SETTLED, payouts=(1, 2)), 0, UNI, []),
    ("cancelled: nothing", facts(0, U0), view(S.CANCELLED, locked=0), 0, CLOSE, []),
]


@pytest.mark.parametrize(
    ("chan", "l1", "now", "intent", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rule(
    chan: ChannelFacts, l1: L1ChannelInfo | None, now: int, intent: Intent, expected: list[Any]
) -> None:
    assert react(chan, l1, now, intent) == expected


def test_every_status_has_a_rule() -> None:
    for status in L1ChannelStatus:
        react(facts(0, U0), view(status, registered_seq=0, deadline=0), 0, NONE)


# -- any input ------------------------------------------------------------------------

amounts = st.integers(0, 1_000)
seqs = st.integers(0, 6)
updates = st.builds(
    upd,
    seqs,
    final=st.booleans(),
    actor=st.integers(0, 1),
    tag=st.integers(0, 2),
)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[ChannelFacts, L1ChannelInfo | None, int, Intent]:
    deposits = (draw(amounts), draw(amounts))
    chan = ChannelFacts(
        index=draw(st.integers(0, 1)),
        deposits=deposits,
        newest=draw(st.none() | updates),
        forced_seen=draw(st.integers(-1, 7)),
        move_signed=draw(st.booleans()),
        final_age=draw(st.none() | st.floats(0, 10)),
    )
    l1 = None
    if draw(st.booleans()):
        deposited = draw(st.none() | st.tuples(amounts, amounts))
        l1 = L1ChannelInfo(
            channel_id=CID,
            status=draw(st.sampled_from(L1ChannelStatus)),
            locked=draw(amounts),
            registered_seq=draw(st.none() | seqs),
            deadline=draw(st.none() | st.integers(0, 20)),
            payouts=draw(st.none() | st.tuples(amounts, amounts)),
            forced=draw(st.none() | updates),
            deposited=deposited,
        )
    intent = Intent(close=draw(st.booleans()), unilateral=draw(st.booleans()))
    return chan, l1, draw(st.integers(0, 20)), intent


@settings(max_examples=1_000, deadline=None)
@given(inputs())
def test_any_input(given_input: tuple[ChannelFacts, L1ChannelInfo | None, int, Intent]) -> None:
    chan, l1, now, intent = given_input
    actions = react(chan, l1, now, intent)
    assert actions == react(chan, l1, now, intent)  # a function of its inputs alone
    assert len(actions) <= 1
    status = None if l1 is None else l1.status
    asked = intent.close or intent.unilateral
    for action in actions:
        if isinstance(action, Open):
            assert l1 is None and chan.index == 0 and chan.newest is not None and not asked
        elif isinstance(action, Deposit):
            assert l1 is not None and status is S.FUNDING and not asked
            # Never more than this party's own share, whatever the view says.
            assert 0 < action.amount <= chan.deposits[chan.index]
            if l1.deposited is not None:
                assert action.amount == chan.deposits[chan.index] - l1.deposited[chan.index]
        elif isinstance(action, Cancel):
            assert status is S.FUNDING and asked
        elif isinstance(action, CloseCooperatively):
            assert status is S.OPEN and action.update == chan.newest and action.update.update.final
        elif isinstance(action, CloseUnilaterally):
            assert status is S.OPEN and intent.unilateral and action.update == chan.newest
        elif isinstance(action, Settle):
            assert l1 is not None and status is S.CLOSING
            assert l1.deadline is not None and now >= l1.deadline
        else:
            # Refute, AdoptForced, ForceMove: only in a running window.
            assert l1 is not None and status is S.CLOSING
            assert l1.deadline is None or now < l1.deadline
            assert chan.newest is not None
            if isinstance(action, Refute):
                assert action.update == chan.newest
                registered = -1 if l1.registered_seq is None else l1.registered_seq
                assert chan.newest.seq >= registered  # never an older update
            elif isinstance(action, AdoptForced):
                assert action.update == l1.forced and action.update.seq > chan.forced_seen
                assert action.update.update.commands[0].actor != chan.index
            else:
                assert isinstance(action, ForceMove)
                assert chan.move_signed and l1.registered_seq == chan.newest.seq
    if status in (S.SETTLED, S.CANCELLED):
        assert actions == []
    if status is S.CLOSING and l1 is not None and l1.deadline is not None and now >= l1.deadline:
        assert actions == [Settle()]  # a window that ended always settles: seq 0 included


@settings(max_examples=500, deadline=None)
@given(inputs())
def test_registered_newest_is_never_refuted(
    given_input: tuple[ChannelFacts, L1ChannelInfo | None, int, Intent],
) -> None:
    """The party's newest update registered (at any seq, 0 included) is never refuted."""
    chan, _, now, intent = given_input
    if chan.newest is None:
        return
    l1 = view(S.CLOSING, registered_seq=chan.newest.seq, deadline=10)
    assert not any(isinstance(a, Refute) for a in react(chan, l1, now, intent))


# -- both parties against a model L1 ----------------------------------------------------


@dataclasses.dataclass
class ModelL1:
    """The L1's rules for what the policy does, reduced to numbers."""

    deposits: tuple[int, int]
    status: S | None = None
    deposited: list[int] = dataclasses.field(default_factory=lambda: [0, 0])
    registered: SignedUpdate | None = None
    deadline: int | None = None
    paid: bool = False

    def view(self, per_party: bool) -> L1ChannelInfo | None:
        if self.status is None:
            return None
        return view(
            self.status,
            locked=sum(self.deposited),
            registered_seq=None if self.registered is None else self.registered.seq,
            deadline=self.deadline,
            deposited=tuple(self.deposited) if per_party else None,
        )

    def apply(self, index: int, action: L1Action, now: int, window: int) -> None:
        if isinstance(action, Open):
            assert self.status is None
            self.status = S.FUNDING
            self.deposited[index] = self.deposits[index]
        elif isinstance(action, Deposit):
            assert self.status is S.FUNDING
            assert self.deposited[index] + action.amount <= self.deposits[index], "over-deposit"
            self.deposited[index] += action.amount
        elif isinstance(action, Cancel):
            self.status, self.paid = S.CANCELLED, True
        elif isinstance(action, CloseCooperatively):
            self.status, self.paid = S.SETTLED, True
        elif isinstance(action, CloseUnilaterally):
            self.status, self.registered = S.CLOSING, action.update
            self.deadline = now + window
        elif isinstance(action, Refute):
            assert self.registered is not None and action.update.seq > self.registered.seq
            self.registered = action.update
        elif isinstance(action, Settle):
            assert self.deadline is not None and now >= self.deadline
            self.status, self.paid = S.SETTLED, True
        if self.status is S.FUNDING and self.deposited == list(self.deposits):
            self.status = S.OPEN


@settings(max_examples=300, deadline=None)
@given(
    deposits=st.tuples(amounts, amounts),
    per_party=st.booleans(),
    newest=seqs,
    stale=seqs,
    closer=st.integers(0, 1),
    failures=st.lists(st.booleans(), max_size=40),
)
def test_both_parties_converge(  # noqa: PLR0917 - Hypothesis passes each strategy
    deposits: tuple[int, int],
    per_party: bool,
    newest: int,
    stale: int,
    closer: int,
    failures: list[bool],
) -> None:
    """Funded exactly (failed actions retried), a stale unilateral close refuted, settled
    with the newest update once the window ends; seq 0 included."""
    l1 = ModelL1(deposits)
    window, now = 5, 0
    latest = upd(newest)
    knows = [latest, latest]
    intents = [NONE, NONE]
    drops = iter(failures)
    for _ in range(200):
        if l1.paid:
            break
        if l1.status is S.OPEN and intents == [NONE, NONE]:
            # The cheat registers an older update directly (not through the policy).
            l1.apply(closer, CloseUnilaterally(update=upd(min(stale, newest))), now, window)
        for index in (0, 1):
            chan = facts(index, knows[index], deposits=deposits)
            actions = react(chan, l1.view(per_party), now, intents[index])
            for action in actions:
                if next(drops, False):
                    continue  # the L1 was unreachable: nothing happened, try again later
                l1.apply(index, action, now, window)
        now += 1
    assert l1.paid, f"not settled after 200 steps: {l1}"
    if l1.status is S.SETTLED:
        assert l1.deposited == list(deposits)  # funded exactly, never more
        assert l1.registered is not None and l1.registered.seq == newest


def test_own_deposit_missing_caps_at_the_share() -> None:
    chan = facts(1, U0, deposits=(500, 100))
    assert own_deposit_missing(chan, view(S.FUNDING, locked=0)) == 100
    assert own_deposit_missing(chan, view(S.FUNDING, locked=550)) == 50
    assert own_deposit_missing(chan, view(S.FUNDING, locked=0, deposited=(0, 100))) == 0
    assert own_deposit_missing(facts(0, U0), view(S.FUNDING, locked=0)) == 0
