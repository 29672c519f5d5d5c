"""Attack catalogue: what a Byzantine peer can try, and what stops it (docs/design.md §4–§6).

Every test drives real :class:`bfs_smr.Channel` objects with real Ed25519 keys over a real
:class:`bfs_smr.adapters.memory.MemoryL1`. The attacker builds its messages with the same wire
encoding as an honest party and signs them with its own real key: only the protocol checks
(and, on L1, the adjudication rules) stand between it and the victim's value.

A refused message must raise :class:`RemoteViolation`, emit no effect at all (in particular
no signature), and leave the victim's channel exactly as it was, so that the honest
continuation still works afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cbor2
import pytest
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import (
    MAX_MESSAGE_SIZE,
    Channel,
    ChannelParams,
    CommandCommitted,
    CommandEntry,
    Ed25519,
    L1ChannelStatus,
    L1Error,
    PersistUpdate,
    Phase,
    RemoteViolation,
    SendMessage,
    SignedUpdate,
    Signer,
    StateMachine,
    Update,
    encode,
)
from bfs_smr._limits import MAX_IN_FLIGHT
from bfs_smr._messages import (
    Accept,
    CloseRequest,
    Commit,
    Denied,
    MessageKind,
    Propose,
    Request,
    Signed,
    encode_message,
    parse_message,
)
from bfs_smr.runtime import load_app

# -- a minimal honest runtime that records everything each party emits ---------------------


def new_signer() -> Signer:
    return Signer(Ed25519(), os.urandom(32))


@dataclass(eq=False)
class Duo:
    """Alice (participant 0, the sequencer) and Bob (participant 1) on one MemoryL1."""

    chain: MemoryL1
    params: ChannelParams
    app: StateMachine[Any]
    a: Signer
    b: Signer
    alice: Channel
    bob: Channel
    #: every byte string each party ever emitted, by participant index
    emitted: dict[int, list[bytes]] = field(default_factory=lambda: {0: [], 1: []})
    #: every doubly-signed update each party persisted, by participant index
    logs: dict[int, list[SignedUpdate]] = field(default_factory=lambda: {0: [], 1: []})
    #: every effect each party produced, by participant index
    seen: dict[int, list[Any]] = field(default_factory=lambda: {0: [], 1: []})

    @property
    def fmt(self) -> Any:
        return self.chain.format

    @property
    def cid(self) -> bytes:
        return self.params.channel_id

    def channel(self, index: int) -> Channel:
        return self.alice if index == 0 else self.bob

    def drain(self, index: int) -> list[bytes]:
        """Carry out one party's effects; returns the messages it sent."""
        out = []
        for effect in self.channel(index).effects():
            self.seen[index].append(effect)
            if isinstance(effect, SendMessage):
                self.emitted[index].append(effect.data)
                out.append(effect.data)
            elif isinstance(effect, PersistUpdate) and effect.committed:
                self.logs[index].append(effect.update)
        return out

    def pump(self) -> None:
        """Deliver messages both ways (FIFO per direction) until both are quiet."""
        to = {0: deque[bytes](), 1: deque[bytes]()}
        to[1].extend(self.drain(0))
        to[0].extend(self.drain(1))
        while to[0] or to[1]:
            for index in (1, 0):
                while to[index]:
                    self.channel(index).receive(to[index].popleft())
                    to[1 - index].extend(self.drain(index))


def make_duo(
    app: str | StateMachine[Any] = "payments",
    deposits: tuple[int, int] = (1_000, 0),
    *,
    chain: MemoryL1 | None = None,
    a: Signer | None = None,
    b: Signer | None = None,
    nonce: int = 0,
    window: int = 100,
    mint: bool = True,
    **kwargs: Any,
) -> Duo:
    chain = chain or MemoryL1()
    a = a or new_signer()
    b = b or new_signer()
    if mint:
        chain.mint(a.public_key, deposits[0])
        chain.mint(b.public_key, deposits[1])
    machine = load_app(app) if isinstance(app, str) else app
    params = ChannelParams(
        l1=chain.format.domain,
        participants=(a.public_key, b.public_key),
        deposits=deposits,
        app=machine.name,
        app_version=machine.version,
        nonce=nonce,
        challenge_window=window,
    )
    return Duo(
        chain=chain,
        params=params,
        app=machine,
        a=a,
        b=b,
        alice=Channel(params, machine, chain.format, a, **kwargs),
        bob=Channel(params, machine, chain.format, b, **kwargs),
    )


def opened(
    app: str | StateMachine[Any] = "payments", deposits: tuple[int, int] = (1_000, 0), **kw: Any
) -> Duo:
    """A duo whose opening update is doubly signed and whose deposits are locked on L1."""
    duo = make_duo(app, deposits, **kw)
    duo.alice.start()
    duo.pump()
    assert duo.alice.phase is Phase.OPEN and duo.bob.phase is Phase.OPEN
    duo.chain.open(duo.a.public_key, duo.params)
    if deposits[1]:
        duo.chain.deposit(duo.b.public_key, duo.cid, deposits[1])
    assert duo.chain.channel(duo.cid).status is L1ChannelStatus.OPEN
    return duo


def pay(duo: Duo, who: int, amount: int) -> None:
    duo.channel(who).issue({"pay": amount})
    duo.pump()


def snapshot(ch: Channel) -> dict[str, Any]:
    """Everything a channel holds (deques as tuples), except its pending effects."""
    return {
        key: tuple(value) if isinstance(value, deque) else value
        for key, value in vars(ch).items()
        if key != "_out"
    }


def assert_refused(ch: Channel, data: bytes, match: str) -> RemoteViolation:
    """``ch`` refuses ``data``: RemoteViolation, no effect at all, nothing changed."""
    before = snapshot(ch)
    committed = ch.committed
    with pytest.raises(RemoteViolation, match=match) as info:
        ch.receive(data)
    assert ch.effects() == [], "a refused message produced effects"
    assert snapshot(ch) == before, "a refused message changed the channel"
    assert info.value.recourse == committed
    return info.value


# -- crafting the attacker's messages --------------------------------------------------------


def craft(
    duo: Duo,
    commands: tuple[CommandEntry, ...] = (),
    *,
    state: Any = None,
    **overrides: Any,
) -> Update:
    """The update an honest sequencer would propose next on top of Bob's committed one,
    with any field replaced by ``overrides``. ``state`` (default: honest replay) gives
    the state hash and outcome."""
    base = duo.bob.committed
    assert base is not None
    if state is None:
        state = duo.bob.state
        for entry in commands:
            state = duo.app.apply(state, entry.command, entry.actor)
    fields: dict[str, Any] = {
        "channel_id": duo.cid,
        "seq": base.seq + 1,
        "prev_hash": base.update.entry_hash(),
        "app_id": duo.params.app_id,
        "commands": tuple(commands),
        "state_hash": duo.app.state_hash(state),
        "outcome": duo.app.checked_outcome(state, duo.params),
        "final": False,
    }
    fields.update(overrides)
    return Update(**fields)


def digest(duo: Duo, update: Update) -> bytes:
    return duo.fmt.digest(update, update.body())


def propose(duo: Duo, update: Update, **kw: Any) -> bytes:
    """A Propose message for ``update`` (unsigned: the follower signs first), with Alice's
    real tag unless ``tag`` is given."""
    tag = kw.pop("tag", None)
    if tag is None:
        tag = duo.a.tag(digest(duo, update))
    cid = kw.pop("channel_id", duo.cid)
    assert not kw
    return encode_message(Propose(channel_id=cid, update=update, tag=tag))


def only(messages: list[bytes], kind: type) -> Any:
    parsed = [parse_message(m) for m in messages]
    assert [type(p) for p in parsed] == [kind], parsed
    return parsed[0]


def honest_proposal(duo: Duo, amount: int = 10) -> bytes:
    """Alice (really) issues a payment; returns the Propose it sent, not yet delivered."""
    duo.alice.issue({"pay": amount})
    sent = duo.drain(0)
    only(sent, Propose)
    return sent[0]


def deliver(duo: Duo, index: int, messages: list[bytes]) -> None:
    """Deliver messages already in transit to party ``index``, then run to quiet."""
    for data in messages:
        duo.channel(index).receive(data)
    duo.pump()


def assert_honest_round_works(duo: Duo, proposal: bytes) -> None:
    """Bob signs ``proposal``, Alice signs and commits it, Bob commits on her COMMIT, and
    both agree."""
    seq = duo.bob.seq + 1
    duo.bob.receive(proposal)
    answer = duo.drain(1)
    accept = only(answer, Accept)
    assert accept.seq == seq
    duo.alice.receive(answer[0])
    deliver(duo, 1, duo.drain(0))
    assert duo.alice.committed == duo.bob.committed
    assert duo.bob.seq == seq and duo.bob.committed.verify(duo.params, duo.fmt)


# == 1. signatures ============================================================================

SIG_FORGERIES = ["stranger", "follower-own-key", "flipped-bit", "zeros", "short", "long"]


def forge_signature(duo: Duo, how: str, msg_digest: bytes, owner: Signer) -> bytes:
    real = owner.sign(msg_digest)
    other = duo.b if owner is duo.a else duo.a
    return {
        "stranger": new_signer().sign(msg_digest),
        "follower-own-key": other.sign(msg_digest),  # reflected: the victim's own signature
        "flipped-bit": real[:10] + bytes([real[10] ^ 1]) + real[11:],
        "zeros": bytes(64),
        "short": real[:63],
        "long": real + b"\x00",
    }[how]


def signed_by_bob(duo: Duo, amount: int = 10) -> tuple[Update, bytes]:
    """Alice proposes a payment, Bob signs it; returns it and Alice's real COMMIT,
    not yet delivered to Bob."""
    real = honest_proposal(duo, amount)
    duo.bob.receive(real)
    answer = duo.drain(1)
    only(answer, Accept)
    duo.alice.receive(answer[0])
    commit = duo.drain(0)
    only(commit, Commit)
    return parse_message(real).update, commit[0]


@pytest.mark.parametrize("how", SIG_FORGERIES)
def test_forged_sequencer_signature_is_refused_then_honest_commit_completes(how):
    duo = opened()
    update, real = signed_by_bob(duo, 10)
    sig = forge_signature(duo, how, digest(duo, update), duo.a)
    forged = encode_message(Commit(channel_id=duo.cid, seq=update.seq, signature=sig))
    assert_refused(duo.bob, forged, "invalid sequencer signature")
    assert duo.bob.seq == 0 and [s.update for s in duo.bob.in_flight()] == [update]
    deliver(duo, 1, [real])
    assert duo.bob.committed == duo.alice.committed and duo.bob.state == (990, 10)


@pytest.mark.parametrize(
    "tail",
    [[], [None], [b""], ["tag"], [bytes(33)], [bytes(32), bytes(32)]],
    ids=["absent", "null", "empty", "text", "too-long", "two"],
)
def test_missing_or_garbage_tag_is_refused(tail):
    duo = opened()
    real = honest_proposal(duo, 10)
    update = parse_message(real).update
    data = encode([int(MessageKind.PROPOSE), duo.cid, update.to_value(), *tail])
    assert_refused(duo.bob, data, "malformed message")
    assert_honest_round_works(duo, real)


def test_valid_signature_from_another_update_is_refused():
    """Alice's genuine signature on seq 0 is not a signature on seq 1."""
    duo = opened()
    update, real = signed_by_bob(duo, 10)
    genuine = duo.bob.committed.signatures[0]
    forged = encode_message(Commit(channel_id=duo.cid, seq=update.seq, signature=genuine))
    assert_refused(duo.bob, forged, "invalid sequencer signature")
    deliver(duo, 1, [real])
    assert duo.bob.seq == 1


def test_commit_of_a_seq_bob_did_not_sign_is_refused():
    duo = opened()
    _, real = signed_by_bob(duo, 10)
    sig = parse_message(real).signature
    for seq in (2, 99):
        bad = encode_message(Commit(channel_id=duo.cid, seq=seq, signature=sig))
        assert_refused(duo.bob, bad, f"COMMIT of seq {seq}, which this party has not signed")
    deliver(duo, 1, [real])
    # A repeated COMMIT (after a reconnect) changes nothing.
    before = duo.bob.committed
    duo.bob.receive(real)
    assert duo.bob.effects() == [] and duo.bob.committed == before


@pytest.mark.parametrize("how", [*SIG_FORGERIES, "old-signature"])
def test_forged_counter_signature_is_refused_then_honest_accept_commits(how):
    duo = opened()
    real = honest_proposal(duo, 10)
    update = parse_message(real).update
    if how == "old-signature":  # Bob's genuine signature, but on seq 0
        sig = duo.bob.committed.signatures[1]
    else:
        sig = forge_signature(duo, how, digest(duo, update), duo.b)
    forged = encode_message(Accept(channel_id=duo.cid, seq=update.seq, signature=sig))
    assert_refused(duo.alice, forged, "invalid signature on seq 1")
    assert duo.alice.seq == 0 and [s.update for s in duo.alice.in_flight()] == [update]
    assert_honest_round_works(duo, real)
    assert duo.alice.seq == 1 and duo.alice.in_flight() == []


def test_counter_signature_for_the_wrong_seq_or_nothing_in_flight_is_refused():
    duo = opened()
    real = honest_proposal(duo, 10)
    update = parse_message(real).update
    sig = duo.b.sign(digest(duo, update))
    for seq in (2, 99):
        bad = encode_message(Accept(channel_id=duo.cid, seq=seq, signature=sig))
        assert_refused(duo.alice, bad, f"a signature on seq {seq}, expected 1")
    # An Accept for a seq already committed (a retransmission's answer, or a replay)
    # carries nothing new: it is ignored and changes nothing.
    for seq in (0, 1):
        before = (duo.alice.committed, duo.alice.in_flight())
        duo.alice.receive(encode_message(Accept(channel_id=duo.cid, seq=seq, signature=sig)))
        assert duo.alice.effects() == [] and (duo.alice.committed, duo.alice.in_flight()) == before
        if seq == 0:
            assert_honest_round_works(duo, real)


# == 2. the hash chain =======================================================================


@pytest.mark.parametrize("delta", [2, 3, 1_000, 2**62])
def test_proposal_with_wrong_sequence_number_is_refused(delta):
    duo = opened()
    pay(duo, 0, 1)  # Bob's newest is seq 1
    real = honest_proposal(duo, 10)
    bad = craft(duo, (CommandEntry(0, 2, {"pay": 10}),), seq=duo.bob.seq + delta)
    assert_refused(duo.bob, propose(duo, bad), f"proposal for seq {bad.seq}, expected 2")
    assert_honest_round_works(duo, real)


def test_stale_proposal_is_refused():
    duo = opened()
    pay(duo, 0, 1)
    pay(duo, 0, 2)  # Bob's newest is seq 2
    stale = duo.logs[1][1].update  # seq 1, already signed
    other = craft(duo, (CommandEntry(0, 9, {"pay": 3}),), seq=1, prev_hash=stale.prev_hash)
    assert_refused(duo.bob, propose(duo, other), "stale proposal for seq 1")
    real = honest_proposal(duo, 10)
    assert_honest_round_works(duo, real)


@pytest.mark.parametrize("link", ["random", "genesis", "skips-one", "own-hash"])
def test_proposal_with_broken_previous_hash_is_refused(link):
    duo = opened()
    pay(duo, 0, 1)
    pay(duo, 0, 2)  # Bob's log: seq 0, 1, 2
    prev = {
        "random": os.urandom(32),
        "genesis": duo.params.genesis_hash,
        "skips-one": duo.logs[1][1].update.entry_hash(),  # links to seq 1, not 2
        "own-hash": duo.logs[1][2].update.state_hash,
    }[link]
    bad = craft(duo, (CommandEntry(0, 3, {"pay": 10}),), prev_hash=prev)
    assert_refused(duo.bob, propose(duo, bad), "does not link")
    assert_honest_round_works(duo, honest_proposal(duo, 10))


def test_proposal_naming_another_app_is_refused():
    duo = opened()
    bad = craft(duo, (CommandEntry(0, 1, {"pay": 10}),), app_id="payments/2")
    assert_refused(duo.bob, propose(duo, bad), "names app")
    assert_honest_round_works(duo, honest_proposal(duo, 10))


# == 3. the content of an update ==============================================================


def test_overdraft_signed_by_the_sequencer_is_refused():
    duo = opened("payments", (100, 50))
    fake = (0, 150)  # as if Alice could pay 150 out of 100
    bad = craft(duo, (CommandEntry(0, 1, {"pay": 150}),), state=fake)
    assert_refused(duo.bob, propose(duo, bad), "invalid transition: overdraft")
    assert_honest_round_works(duo, honest_proposal(duo, 10))
    assert duo.bob.state == (90, 60)


@pytest.mark.parametrize(
    "command",
    [{"pay": 0}, {"pay": -1}, {"pay": "100"}, {"pay": 10, "x": 1}, None, [1]],
)
def test_malformed_command_signed_by_the_sequencer_is_refused(command):
    duo = opened("payments", (100, 50))
    bad = craft(duo, (CommandEntry(0, 1, command),), state=(0, 150))
    assert_refused(duo.bob, propose(duo, bad), "invalid transition")
    assert_honest_round_works(duo, honest_proposal(duo, 10))


def test_bignum_in_a_signed_command_is_refused_by_the_decoder():
    # 2**80 has no CBOR integer head: cbor2 writes it as a tag-2 bignum, which bfs-smr
    # never writes, so the message is refused before the app sees it.
    duo = opened("payments", (100, 50))
    bad = craft(duo, (CommandEntry(0, 1, {"pay": 2**80}),), state=(0, 150))
    assert_refused(duo.bob, propose(duo, bad), "malformed message: unsupported CBOR item: a tag")
    assert_honest_round_works(duo, honest_proposal(duo, 10))


def _board(*cells: tuple[int, int]) -> tuple[int, ...]:
    board = [0] * 9
    for cell, mark in cells:
        board[cell] = mark
    return tuple(board)


@pytest.mark.parametrize(
    ("moves", "command", "state", "why"),
    [
        # X (Alice) moves again although it is O's (Bob's) turn.
        # (Bob, to move, signs first: an update that is not his move alone is refused.)
        ([(0, 0)], {"cell": 4}, (_board((0, 1), (4, 1)), 1, 500, 500), "not its move alone"),
        # X overwrites O's cell on its own turn.
        ([(0, 0), (1, 4)], {"cell": 4}, (_board((0, 1), (4, 1)), 1, 500, 500), "is taken"),
        # X plays on after it has already won.
        (
            [(0, 0), (1, 3), (0, 1), (1, 4), (0, 2)],
            {"cell": 8},
            (_board((0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (8, 1)), 1, 500, 500),
            "game is over",
        ),
    ],
    ids=["out-of-turn", "cell-taken", "after-the-end"],
)
def test_tictactoe_illegal_move_is_refused(moves, command, state, why):
    duo = opened("tictactoe", (500, 500))
    for who, cell in moves:
        duo.channel(who).issue({"cell": cell})
        duo.pump()
    before = duo.bob.state
    bad = craft(duo, (CommandEntry(0, 99, command),), state=state)
    assert_refused(duo.bob, propose(duo, bad), f"(invalid transition: .*)?{why}")
    assert duo.bob.state == duo.alice.state == before
    if duo.app.to_move(before) == 1:  # the honest game goes on
        duo.bob.issue({"cell": 8})
        duo.pump()
        assert duo.alice.state == duo.bob.state and duo.bob.state[0][8] == 2


def test_tictactoe_final_update_mid_game_is_refused():
    """The sequencer cannot close a game it is losing by proposing a final update."""
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    duo.pump()
    bad = craft(duo, final=True)
    assert_refused(duo.bob, propose(duo, bad), "forbids closing")


def test_final_update_with_commands_is_refused():
    duo = opened()
    bad = craft(duo, (CommandEntry(0, 1, {"pay": 10}),), final=True)
    assert_refused(duo.bob, propose(duo, bad), "final update 1 carries commands")


@pytest.mark.parametrize(
    "outcome",
    [(991, 9), (1_000, 0), (0, 1_000), (990, 9), (991, 10), (2**62, 0)],
    ids=["shift-1", "all-to-alice", "swapped", "burns-1", "mints-1", "huge"],
)
def test_outcome_that_steals_is_refused_although_state_hash_is_right(outcome):
    duo = opened()
    good = craft(duo, (CommandEntry(0, 1, {"pay": 10}),))
    assert good.outcome == (990, 10)
    bad = dataclasses.replace(good, outcome=outcome)
    assert_refused(duo.bob, propose(duo, bad), "outcome .* differs from re-execution")
    assert_honest_round_works(duo, honest_proposal(duo, 10))
    assert duo.bob.committed.update.outcome == (990, 10)


def test_state_hash_that_differs_from_re_execution_is_refused():
    duo = opened()
    good = craft(duo, (CommandEntry(0, 1, {"pay": 10}),))
    bad = dataclasses.replace(good, state_hash=duo.app.state_hash((980, 20)))
    assert_refused(duo.bob, propose(duo, bad), "state hash differs")


def test_sequencer_cannot_put_an_unrequested_payment_from_the_follower():
    duo = opened("payments", (100, 100))
    steal = CommandEntry(1, 1, {"pay": 100})  # "Bob pays Alice 100", Bob never asked
    assert_refused(duo.bob, propose(duo, craft(duo, (steal,))), "never issued")
    # Hidden among Alice's own commands, too.
    mixed = (CommandEntry(0, 1, {"pay": 1}), steal)
    assert_refused(duo.bob, propose(duo, craft(duo, mixed)), "never issued")
    assert_honest_round_works(duo, honest_proposal(duo, 10))
    assert duo.bob.state == (90, 110)


@pytest.mark.parametrize("tamper", ["amount", "ref", "reordered", "twice", "close-as-command"])
def test_sequencer_cannot_alter_the_followers_requests(tamper):
    duo = opened("payments", (100, 100))
    duo.bob.issue({"pay": 5})  # ref 1
    duo.bob.issue({"pay": 7})  # ref 2
    requests = duo.drain(1)
    assert [only([r], Request).ref for r in requests] == [1, 2]
    entries = {
        "amount": (CommandEntry(1, 1, {"pay": 50}),),
        "ref": (CommandEntry(1, 2, {"pay": 5}),),
        "reordered": (CommandEntry(1, 2, {"pay": 7}), CommandEntry(1, 1, {"pay": 5})),
        "twice": (CommandEntry(1, 1, {"pay": 5}), CommandEntry(1, 1, {"pay": 5})),
        "close-as-command": (CommandEntry(1, 3, {"pay": 1}),),
    }[tamper]
    if tamper == "close-as-command":
        duo.bob.close()  # ref 3 is Bob's close request, not a payment
        requests += duo.drain(1)
    assert_refused(duo.bob, propose(duo, craft(duo, entries)), "never issued")
    # The real requests, sequenced honestly, still go through.
    for data in requests:
        duo.alice.receive(data)
    duo.pump()
    assert duo.bob.state == duo.alice.state
    assert duo.bob.state == (112, 88)


class Notes(StateMachine[tuple[int, int, tuple[Any, ...]]]):
    """A lenient app: every plain value is a note, kept as it came (with the deposits)."""

    name = "notes"
    version = 1

    def initial_state(self, params: ChannelParams) -> tuple[int, int, tuple[Any, ...]]:
        return (params.deposits[0], params.deposits[1], ())

    def apply(self, state: Any, command: Any, actor: int) -> tuple[int, int, tuple[Any, ...]]:
        return (state[0], state[1], (*state[2], (actor, command)))

    def outcome(self, state: Any) -> tuple[int, int]:
        return (state[0], state[1])


@pytest.mark.parametrize(
    ("asked", "swapped"),
    [(1, True), (0, False), ([1, 0], [True, False]), ({"n": 1}, {"n": True})],
)
def test_sequencer_cannot_swap_a_request_for_one_python_calls_equal(asked, swapped):
    # 1 == True in Python, but they encode differently: an update with the swapped
    # command is another update (another state on L1), which Bob never asked for.
    duo = opened(Notes(), (100, 100))
    assert asked == swapped and encode(asked) != encode(swapped)
    duo.bob.issue(asked)
    request = only(duo.drain(1), Request)
    update = craft(duo, (CommandEntry(1, request.ref, swapped),))
    assert_refused(duo.bob, propose(duo, update), "never issued")
    # Alice sequences the real request; Bob signs that.
    deliver(duo, 0, [encode_message(request)])
    assert duo.bob.seq == 1 and duo.alice.committed == duo.bob.committed
    assert encode(duo.bob.state) == encode((100, 100, ((1, asked),)))


# == 4. replay across channels ================================================================


def two_channels() -> tuple[Duo, Duo]:
    """Two channels between the same keys on the same L1, differing only by nonce."""
    chain, a, b = MemoryL1(), new_signer(), new_signer()
    one = opened(chain=chain, a=a, b=b, nonce=1)
    two = opened(chain=chain, a=a, b=b, nonce=2)
    assert one.cid != two.cid
    return one, two


def test_proposal_replayed_from_another_channel_is_refused():
    one, two = two_channels()
    pay(one, 0, 1)  # both channels at seq 1 ...
    pay(two, 0, 900)  # ... channel two much better for Bob
    theirs = honest_proposal(two, 50)  # channel two's seq 2
    assert_refused(one.bob, theirs, "message for another channel")
    # Re-wrapped as if for channel one: the update still belongs to channel two.
    update = parse_message(theirs).update
    rewrapped = propose(one, update, tag=parse_message(theirs).tag)
    assert_refused(one.bob, rewrapped, "another channel|does not link")
    assert_honest_round_works(one, honest_proposal(one, 10))
    assert one.bob.state == (989, 11)


def test_counter_signature_replayed_from_another_channel_is_refused():
    one, two = two_channels()
    mine = honest_proposal(one, 10)
    theirs = honest_proposal(two, 10)  # same keys, same seq, same payment
    two.bob.receive(theirs)
    accept = two.drain(1)
    assert_refused(one.alice, accept[0], "message for another channel")
    sig = only(accept, Accept).signature
    rewrapped = encode_message(Accept(channel_id=one.cid, seq=1, signature=sig))
    assert_refused(one.alice, rewrapped, "invalid signature on seq 1")
    assert_honest_round_works(one, mine)


def test_update_labelled_with_another_channels_id_cannot_rob_the_follower():
    """Alice chains an update on channel one's log but labels it for channel two.

    Bob holds 900 in channel two (seq 1) and 3 in channel one (seq 3). If Bob signed the
    relabelled seq 4, Alice would hold a doubly-signed channel-two update, newer than
    anything Bob has there, that pays Bob 3: she closes channel two with it and Bob
    cannot refute. (Regression: the follower once checked only the message's channel id.)
    """
    one, two = two_channels()
    for _ in range(3):
        pay(one, 0, 1)  # channel one: seq 3, Bob has 3
    pay(two, 0, 900)  # channel two: seq 1, Bob has 900
    bad = craft(one, (), channel_id=two.cid)  # seq 4, linked to channel one's seq 3
    sig_a = one.a.sign(digest(one, bad))  # Alice signs once Bob has (follower first)
    data = propose(one, bad)
    try:
        one.bob.receive(data)
    except RemoteViolation:
        attack = two.logs[0][0]  # all Alice can do is close with a stale update
    else:
        accept = only(one.drain(1), Accept)
        attack = SignedUpdate(bad, (sig_a, accept.signature))
    chain = two.chain
    deadline = chain.unilateral_close(two.a.public_key, attack)
    with contextlib.suppress(L1Error):  # Bob answers with his newest channel-two update
        chain.refute(two.b.public_key, two.bob.committed)
    chain.advance(deadline - chain.now())
    chain.settle(two.b.public_key, two.cid)
    assert chain.channel(two.cid).payouts == (100, 900), "Bob was robbed in channel two"


def test_l1_rejects_an_update_replayed_for_another_channel():
    one, two = two_channels()
    pay(one, 0, 100)
    pay(two, 0, 900)
    chain = one.chain
    supply = chain.total_supply()
    txs = chain.transactions
    theirs = two.bob.committed  # doubly signed for channel two
    relabelled = SignedUpdate(
        dataclasses.replace(theirs.update, channel_id=one.cid), theirs.signatures
    )
    ours = one.bob.committed
    sigs_swapped = SignedUpdate(theirs.update, ours.signatures)  # channel two, one's sigs
    ours_relabelled = SignedUpdate(
        dataclasses.replace(ours.update, channel_id=two.cid), ours.signatures
    )
    for attempt in (relabelled, sigs_swapped, ours_relabelled):
        with pytest.raises(L1Error, match="not signed by both"):
            chain.unilateral_close(one.a.public_key, attempt)
    for cid in (one.cid, two.cid):
        assert chain.channel(cid).status is L1ChannelStatus.OPEN
    assert chain.transactions == txs and chain.total_supply() == supply
    # The genuine update closes its own channel, and only that one.
    chain.unilateral_close(one.a.public_key, ours)
    assert chain.channel(one.cid).status is L1ChannelStatus.CLOSING
    assert chain.channel(two.cid).status is L1ChannelStatus.OPEN


def test_l1_rejects_an_update_replayed_on_another_l1():
    """Same keys, same nonce, another chain id: the channel id and the digest differ."""
    a, b = new_signer(), new_signer()
    here = opened(chain=MemoryL1(chain_id="here"), a=a, b=b)
    there = opened(chain=MemoryL1(chain_id="there"), a=a, b=b)
    pay(here, 0, 700)
    signed = here.bob.committed
    with pytest.raises(L1Error, match="no such channel"):
        there.chain.unilateral_close(a.public_key, signed)
    relabelled = SignedUpdate(
        dataclasses.replace(signed.update, channel_id=there.cid), signed.signatures
    )
    with pytest.raises(L1Error, match="not signed by both"):
        there.chain.unilateral_close(a.public_key, relabelled)
    assert there.chain.channel(there.cid).status is L1ChannelStatus.OPEN


def test_a_sequencer_that_never_commits_cannot_grow_the_followers_memory():
    """Bob signs first; Alice withholds every COMMIT and keeps proposing. Bob keeps at
    most MAX_IN_FLIGHT updates awaiting her signature and refuses the next."""
    duo = opened("payments", (2_000, 0))
    proposals = []
    for _ in range(MAX_IN_FLIGHT + 1):
        update = craft_on(duo, proposals[-1] if proposals else None)
        proposals.append(update)
    for update in proposals[:-1]:
        duo.bob.receive(propose(duo, update))
    assert len(duo.bob.in_flight()) == MAX_IN_FLIGHT
    duo.drain(1)
    assert_refused(duo.bob, propose(duo, proposals[-1]), f"more than {MAX_IN_FLIGHT} updates")


def craft_on(duo: Duo, previous: Update | None) -> Update:
    """Alice's next payment of 1, on ``previous`` (or on Bob's committed update)."""
    base = previous or duo.bob.committed.update
    paid = base.outcome[1] + 1
    state = (duo.params.locked - paid, paid)
    return Update(
        channel_id=duo.cid,
        seq=base.seq + 1,
        prev_hash=base.entry_hash(),
        app_id=duo.params.app_id,
        commands=(CommandEntry(0, base.seq + 1, {"pay": 1}),),
        state_hash=duo.app.state_hash(state),
        outcome=duo.app.checked_outcome(state, duo.params),
        final=False,
    )


# == 5. I1: one signature per sequence number ==================================================


def test_second_update_at_a_signed_seq_gets_no_signature():
    duo = opened("payments", (1_000, 1_000))
    pay(duo, 0, 10)  # Bob signed seq 1: Alice pays 10
    signed = duo.bob.committed
    # Alternatives at seq 1 that are each valid on their own, all signed by Alice.
    alternatives = [
        craft(duo, (CommandEntry(0, 1, {"pay": 1}),), seq=1, prev_hash=signed.update.prev_hash,
              state=(999, 1001)),
        craft(duo, (), seq=1, prev_hash=signed.update.prev_hash, state=(1000, 1000),
              final=True),
        dataclasses.replace(signed.update, commands=(CommandEntry(0, 2, {"pay": 10}),)),
    ]  # fmt: skip
    forbidden = [duo.b.sign(digest(duo, alt)) for alt in alternatives]
    for alt in alternatives:
        assert alt != signed.update
        assert_refused(duo.bob, propose(duo, alt), "second, different update at seq 1")
    # The retransmitted original gets the very same signature again (not a new one).
    duo.bob.receive(propose(duo, signed.update))
    again = only(duo.drain(1), Accept)
    assert (again.seq, again.signature) == (1, signed.signatures[1])
    # After Bob moves on, the old slot stays closed.
    pay(duo, 0, 20)
    for alt in alternatives:
        assert_refused(duo.bob, propose(duo, alt), "stale proposal for seq 1")
    # Scan every byte Bob ever emitted: none of the forbidden signatures left him.
    for data in duo.emitted[1]:
        for sig in forbidden:
            assert sig not in data
    accepts = [parse_message(d) for d in duo.emitted[1]]
    by_seq: dict[int, set[bytes]] = {}
    for msg in accepts:
        assert type(msg) is Accept
        by_seq.setdefault(msg.seq, set()).add(msg.signature)
    assert all(len(sigs) == 1 for sigs in by_seq.values())
    assert sorted(by_seq) == [0, 1, 2]


def test_the_signature_is_persisted_before_it_leaves():
    duo = opened()
    duo.bob.receive(honest_proposal(duo, 10))
    effects = duo.bob.effects()
    kinds = [type(e) for e in effects]
    assert kinds.index(PersistUpdate) < kinds.index(SendMessage)
    persisted = next(e for e in effects if isinstance(e, PersistUpdate))
    accept = parse_message(next(e for e in effects if isinstance(e, SendMessage)).data)
    # Signed first, by Bob alone: durable as such before his ACCEPT leaves (I1).
    assert not persisted.committed and persisted.update.signatures[1] == accept.signature
    assert persisted.tag == parse_message(duo.emitted[0][-1]).tag


# == 6. L1: disputes, forgeries, double locking, double payment =============================


def payouts_of(duo: Duo) -> tuple[int, int]:
    return (duo.chain.balance(duo.a.public_key), duo.chain.balance(duo.b.public_key))


def test_stale_unilateral_close_is_refuted_and_settle_pays_the_newest():
    duo = opened(window=50)
    pay(duo, 0, 100)  # seq 1: Bob has 100
    pay(duo, 0, 200)  # seq 2: Bob has 300
    pay(duo, 1, 50)  # seq 3: Bob has 250
    stale, newest = duo.logs[1][1], duo.logs[1][3]
    assert stale.update.outcome == (900, 100) and newest.update.outcome == (750, 250)
    supply = duo.chain.total_supply()
    # Alice closes with the stale state that suits her (Bob had only 100 then).
    deadline = duo.chain.unilateral_close(duo.a.public_key, stale)
    assert duo.chain.channel(duo.cid).registered_seq == 1
    duo.chain.advance(20)
    # Bob refutes with the newest doubly-signed update; the window is not reset.
    duo.chain.refute(duo.b.public_key, newest)
    info = duo.chain.channel(duo.cid)
    assert info.registered_seq == 3 and info.deadline == deadline
    # Alice cannot go back to an older (or the same) state.
    for older in (duo.logs[1][2], stale, newest):
        with pytest.raises(L1Error, match="not newer"):
            duo.chain.refute(duo.a.public_key, older)
    with pytest.raises(L1Error, match="not open"):
        duo.chain.unilateral_close(duo.a.public_key, stale)
    duo.chain.advance(deadline - duo.chain.now())
    assert duo.chain.settle(duo.b.public_key, duo.cid) == (750, 250)
    assert payouts_of(duo) == (750, 250)
    assert duo.chain.total_supply() == supply == 1_000


def test_refute_after_the_window_is_too_late():
    duo = opened(window=10)
    pay(duo, 0, 100)
    pay(duo, 0, 100)
    duo.chain.unilateral_close(duo.a.public_key, duo.logs[1][1])
    duo.chain.advance(10)
    with pytest.raises(L1Error, match="window has ended"):
        duo.chain.refute(duo.b.public_key, duo.logs[1][2])
    assert duo.chain.settle(duo.a.public_key, duo.cid) == (900, 100)


def test_close_with_a_half_signed_update_is_rejected_by_l1():
    """An update Bob signed, which Alice never signed after him."""
    duo = opened()
    pay(duo, 0, 10)
    duo.alice.issue({"pay": 990})  # Alice proposes seq 2, Bob signs ... and she never does
    duo.bob.receive(duo.drain(0)[0])
    duo.drain(1)
    half = duo.bob.in_flight()[0]
    assert half.signatures[0] is None and half.verify(duo.params, duo.fmt, require=(1,))
    self_forged = SignedUpdate(half.update, (half.signatures[1], half.signatures[1]))
    txs, supply = duo.chain.transactions, duo.chain.total_supply()
    for attempt in (half, self_forged):
        with pytest.raises(L1Error, match="not signed by both"):
            duo.chain.unilateral_close(duo.b.public_key, attempt)
    assert duo.chain.channel(duo.cid).status is L1ChannelStatus.OPEN
    # Once registered, a half-signed update cannot refute either.
    duo.chain.unilateral_close(duo.a.public_key, duo.bob.committed)
    with pytest.raises(L1Error, match="not signed by both"):
        duo.chain.refute(duo.b.public_key, half)
    assert duo.chain.transactions == txs + 1 and duo.chain.total_supply() == supply


@pytest.mark.parametrize(
    "alice_sig", ["missing", "from-an-old-seq", "stranger", "garbage", "bob-reflected"]
)
@pytest.mark.parametrize("final", [False, True], ids=["unilateral", "cooperative"])
def test_close_with_a_fabricated_update_is_rejected_by_l1(alice_sig, final):
    """Bob fabricates 'Alice pays Bob everything', signs it himself and tries to close."""
    duo = opened()
    pay(duo, 0, 10)
    fake = craft(duo, (CommandEntry(0, 9, {"pay": 990}),))
    if final:
        fake = dataclasses.replace(fake, seq=fake.seq + 1, commands=(), final=True)
    assert fake.outcome == (0, 1_000)
    d = digest(duo, fake)
    forged_a = {
        "missing": None,
        "from-an-old-seq": duo.bob.committed.signatures[0],  # Alice's genuine seq-1 sig
        "stranger": new_signer().sign(d),
        "garbage": os.urandom(64),
        "bob-reflected": duo.b.sign(d),
    }[alice_sig]
    before = (duo.chain.transactions, duo.chain.total_supply(), payouts_of(duo))
    submit = duo.chain.cooperative_close if final else duo.chain.unilateral_close
    for sigs in ((forged_a, duo.b.sign(d)), (None, None)):
        with pytest.raises(L1Error, match="not signed by both"):
            submit(duo.b.public_key, SignedUpdate(fake, sigs))
    assert duo.chain.channel(duo.cid).status is L1ChannelStatus.OPEN
    assert (duo.chain.transactions, duo.chain.total_supply(), payouts_of(duo)) == before


def test_l1_rejects_a_doubly_signed_update_that_does_not_conserve_value():
    """Even with both signatures, an outcome must pay exactly the locked value (I4)."""
    duo = opened()
    fake = craft(duo, (), outcome=(1_000, 1))
    d = digest(duo, fake)
    forged = SignedUpdate(fake, (duo.a.sign(d), duo.b.sign(d)))
    with pytest.raises(L1Error, match="exactly the locked value"):
        duo.chain.unilateral_close(duo.a.public_key, forged)


@pytest.mark.parametrize("owner", [0, 1])
def test_value_locked_in_one_channel_cannot_be_locked_in_another(owner):
    chain, a, b = MemoryL1(), new_signer(), new_signer()
    deposits = (300, 0) if owner == 0 else (0, 300)
    first = opened(deposits=deposits, chain=chain, a=a, b=b, nonce=1)
    key = (a, b)[owner].public_key
    chain.mint(key, 200)  # 300 locked in `first`, 200 free: not enough for 300 more
    second = make_duo(deposits=deposits, chain=chain, a=a, b=b, nonce=2, mint=False)
    second.alice.start()
    second.pump()
    supply, txs = chain.total_supply(), chain.transactions
    with pytest.raises(L1Error, match="insufficient funds: 300 needed, 200 unlocked"):
        if owner == 0:
            chain.open(key, second.params)
        else:
            chain.open(a.public_key, second.params)  # Alice opens (nothing to lock) ...
            txs += 1
            chain.deposit(key, second.cid, 300)  # ... Bob cannot fund it twice
    assert chain.balance(key) == 200
    assert chain.channel(first.cid).locked == 300
    assert chain.total_supply() == supply == 500
    assert chain.transactions == txs
    # Nor can the same channel be opened twice to lock the same deposit again.
    with pytest.raises(L1Error, match="exists already"):
        chain.open(key, first.params)


def test_settle_before_the_window_or_twice_pays_nothing_more():
    duo = opened(window=30)
    pay(duo, 0, 400)
    supply = duo.chain.total_supply()
    assert duo.chain.unilateral_close(duo.b.public_key, duo.bob.committed) == 30
    for step in (0, 29):
        duo.chain.advance(step)
        with pytest.raises(L1Error, match="window is still open until 30"):
            duo.chain.settle(duo.b.public_key, duo.cid)
        assert payouts_of(duo) == (0, 0)
    duo.chain.advance(1)
    assert duo.chain.settle(duo.b.public_key, duo.cid) == (600, 400)
    paid = payouts_of(duo)
    assert paid == (600, 400) and duo.chain.total_supply() == supply == 1_000
    for who in (duo.a, duo.b):
        with pytest.raises(L1Error, match="settled"):
            duo.chain.settle(who.public_key, duo.cid)
        with pytest.raises(L1Error, match="settled"):
            duo.chain.unilateral_close(who.public_key, duo.bob.committed)
        with pytest.raises(L1Error, match="settled"):
            duo.chain.refute(who.public_key, duo.bob.committed)
    duo.alice.close()
    duo.pump()
    final = duo.logs[0][-1]
    assert final.update.final
    with pytest.raises(L1Error, match="settled"):
        duo.chain.cooperative_close(duo.a.public_key, final)
    assert payouts_of(duo) == paid and duo.chain.total_supply() == supply


def test_settle_of_an_open_or_cooperatively_closed_channel_is_rejected():
    duo = opened()
    with pytest.raises(L1Error, match="not closing"):
        duo.chain.settle(duo.a.public_key, duo.cid)
    pay(duo, 0, 250)
    duo.bob.close()
    duo.pump()
    final = duo.logs[1][-1]
    assert duo.chain.cooperative_close(duo.b.public_key, final) == (750, 250)
    supply = duo.chain.total_supply()
    with pytest.raises(L1Error, match="not closing"):
        duo.chain.settle(duo.a.public_key, duo.cid)
    with pytest.raises(L1Error, match="settled"):
        duo.chain.cooperative_close(duo.a.public_key, final)
    assert payouts_of(duo) == (750, 250) and duo.chain.total_supply() == supply == 1_000


# == 7. malformed, oversized, unknown and replayed messages ==================================


def _canonical_request(cid: bytes) -> bytes:
    return encode_message(Request(channel_id=cid, ref=1, command={"pay": 5}))


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


MALFORMED: dict[str, Any] = {
    "empty": lambda cid: b"",
    "garbage": lambda cid: b"\xff\x00garbage",
    "truncated": lambda cid: _canonical_request(cid)[:-1],
    "trailing-byte": lambda cid: _canonical_request(cid) + b"\x00",
    "tag": lambda cid: encode([int(MessageKind.REQUEST), cid, 1, cbor2.CBORTag(99, 0)]),
    "bad-utf8": lambda cid: encode([int(MessageKind.DENIED), cid, 1, "x"])[:-1] + b"\xff",
    "oversized": lambda cid: encode([int(MessageKind.REQUEST), cid, 1, b"\x00" * MAX_MESSAGE_SIZE]),
    "float": lambda cid: encode([int(MessageKind.REQUEST), cid, 1, 1.5]),
    "too-deep": lambda cid: encode([int(MessageKind.REQUEST), cid, 1, _nested(40)]),
    "not-an-array": lambda cid: encode({"kind": 1}),
    "unknown-kind": lambda cid: encode([99, cid, 1, 2]),
    "kind-zero": lambda cid: encode([0, cid]),
    "kind-as-text": lambda cid: encode(["propose", cid, 1, b"x"]),
    "wrong-arity": lambda cid: encode([int(MessageKind.ACCEPT), cid, 1]),
    "short-channel-id": lambda cid: encode([int(MessageKind.ACCEPT), cid[:31], 1, b"s" * 64]),
    "negative-seq": lambda cid: encode([int(MessageKind.ACCEPT), cid, -1, b"s" * 64]),
    "huge-ref": lambda cid: encode([int(MessageKind.REQUEST), cid, 2**64, {"pay": 1}]),
    "bad-update": lambda cid: encode([int(MessageKind.PROPOSE), cid, [1, 2, 3], b"s" * 64]),
    "long-reason": lambda cid: encode([int(MessageKind.DENIED), cid, 1, "x" * 201]),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("victim", [0, 1], ids=["at-sequencer", "at-follower"])
def test_malformed_message_is_a_violation_and_changes_nothing(name, victim):
    duo = opened("payments", (1_000, 1_000))
    pay(duo, 0, 10)
    # Give both sides something pending, so "unchanged" covers queues too.
    duo.bob.issue({"pay": 5})
    request = duo.drain(1)
    real = honest_proposal(duo, 10)
    data = MALFORMED[name](duo.cid)
    if name == "oversized":
        assert len(data) > MAX_MESSAGE_SIZE
    assert_refused(duo.channel(victim), data, "malformed message")
    # And everything honest still goes through afterwards.
    duo.alice.receive(request[0])
    deliver(duo, 1, [real, *duo.drain(0)])
    assert duo.alice.committed == duo.bob.committed
    assert duo.bob.state == (985, 1_015)


@pytest.mark.parametrize(
    "variant",
    [
        # ref 1 encoded in two bytes instead of one
        lambda data: data[:36] + b"\x18\x01" + data[37:],
        # the same array with an indefinite length
        lambda data: b"\x9f" + data[1:] + b"\xff",
    ],
    ids=["long-int", "indefinite-array"],
)
def test_non_canonical_encoding_is_refused_or_means_exactly_the_same(variant):
    """A second encoding of a request must not be a second request, nor a different one."""
    results = []
    for use_variant in (False, True):
        duo = opened("payments", (1_000, 1_000))
        data = _canonical_request(duo.cid)
        if use_variant:
            assert data[36] == 1  # the ref, right after [kind, 32-byte channel id]
            data = variant(data)
            try:
                duo.alice.receive(data)
            except RemoteViolation:  # refusing is fine, as long as nothing changed
                assert duo.alice.effects() == [] and duo.alice.pending == 0
                return
        else:
            duo.alice.receive(data)
        proposal = only(duo.drain(0), Propose)
        # Replaying the canonical bytes after either encoding is a replay of ref 1.
        assert_replay_harmless(duo.alice, _canonical_request(duo.cid))
        results.append((proposal.update.commands, proposal.update.outcome))
    assert results[0] == results[1] == (((CommandEntry(1, 1, {"pay": 5})),), (1_005, 995))


@pytest.mark.parametrize(
    ("victim", "message"),
    [
        (0, lambda d: Propose(channel_id=d.cid, update=craft(d), tag=b"t" * 32)),
        (0, lambda d: Denied(channel_id=d.cid, ref=1, reason="no")),
        (0, lambda d: Commit(channel_id=d.cid, seq=1, signature=b"s" * 64)),
        (1, lambda d: Accept(channel_id=d.cid, seq=1, signature=b"s" * 64)),
        (1, lambda d: Request(channel_id=d.cid, ref=1, command={"pay": 1})),
        (1, lambda d: CloseRequest(channel_id=d.cid, ref=1)),
        (1, lambda d: Signed(channel_id=d.cid, update=craft(d), signature=b"s" * 64,
                             tag=b"t" * 32)),
    ],
    ids=["propose-to-sequencer", "denied-to-sequencer", "commit-to-sequencer",
         "accept-to-follower", "request-to-follower", "close-request-to-follower",
         "signed-to-follower"],
)  # fmt: skip
def test_message_for_the_other_role_is_a_violation(victim, message):
    duo = opened()
    assert_refused(duo.channel(victim), encode_message(message(duo)), "unexpected")
    assert_honest_round_works(duo, honest_proposal(duo, 10))


def test_message_for_another_channel_is_a_violation():
    duo = opened()
    other = os.urandom(32)
    for victim, msg in (
        (1, Propose(channel_id=other, update=craft(duo), tag=b"t" * 32)),
        (0, Request(channel_id=other, ref=1, command={"pay": 1})),
    ):
        assert_refused(duo.channel(victim), encode_message(msg), "another channel")


def assert_replay_harmless(channel, data):
    """A request ref seen before is never executed again: ignored, or denied."""
    before = (channel.committed, channel.pending, channel.in_flight())
    channel.receive(data)
    sent = [e for e in channel.effects() if isinstance(e, SendMessage)]
    assert all(isinstance(parse_message(e.data), Denied) for e in sent)
    assert all(parse_message(e.data).reason == "already handled" for e in sent)
    assert (channel.committed, channel.pending, channel.in_flight()) == before


def test_replayed_request_ref_at_the_sequencer_is_never_executed_twice():
    duo = opened("payments", (1_000, 1_000))
    duo.bob.issue({"pay": 5})  # ref 1
    first = duo.drain(1)
    duo.alice.receive(first[0])
    to_bob = duo.drain(0)
    # The exact bytes again (a replay), the same ref with another command, a lower ref.
    for data in (
        first[0],
        encode_message(Request(channel_id=duo.cid, ref=1, command={"pay": 500})),
        encode_message(Request(channel_id=duo.cid, ref=0, command={"pay": 1})),
        encode_message(CloseRequest(channel_id=duo.cid, ref=1)),
    ):
        assert_replay_harmless(duo.alice, data)
    deliver(duo, 1, to_bob)
    assert duo.bob.state == (1_005, 995)  # paid once, not twice
    # A fresh ref is fine.
    duo.bob.issue({"pay": 5})
    duo.pump()
    assert duo.bob.state == duo.alice.state == (1_010, 990)
    committed = [e for e in duo.seen[0] if isinstance(e, CommandCommitted) and e.actor == 1]
    assert [(e.ref, e.command) for e in committed] == [(1, {"pay": 5}), (2, {"pay": 5})]
