"""Review of issue 12: no input sequence makes a channel raise anything but its own errors.

The channel now checks, at every dispatch, that a handler left the party in a phase its
``TRANSITIONS`` entry names, and raises ``InternalError`` otherwise; in a node that error
closes the link the message came on. This drives two parties with everything a peer or
an operator can do, in any order: commands, closes, delivery, loss, replays of any
message seen so far, reconnects (resync), restarts from what each persisted, force moves
and adopting the other's, and messages the peer crafts with its own key (HELLOs with any
position, denials and requests with any ref, proposals on the victim's head, final ones
included, counter-signatures for the wrong seq). Only ``RemoteViolation``, ``LocalError``
and ``CommandRejected`` may come out; ``InternalError`` or anything else fails the test.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
from bfs_smr.adapters.memory import MemoryL1
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from bfs_smr import (
    Channel,
    ChannelLimits,
    ChannelParams,
    CommandEntry,
    CommandRejected,
    Ed25519,
    LocalError,
    PersistUpdate,
    RemoteViolation,
    SendMessage,
    Signer,
    Update,
)
from bfs_smr._messages import (
    Accept,
    CloseRequest,
    Denied,
    Hello,
    Message,
    Propose,
    Request,
    ServeLog,
    encode_message,
)
from bfs_smr._state import CLOSE_MARK
from bfs_smr.runtime import load_app

EXPECTED = (RemoteViolation, LocalError, CommandRejected)
ALICE, BOB = 0, 1
WHO = st.sampled_from([ALICE, BOB])


class Chaos(RuleBasedStateMachine):
    APP = "tictactoe"

    def command(self, n: int) -> Any:
        return {"cell": n % 9} if self.APP == "tictactoe" else {"inc": n % 5 + 1}

    @initialize(window=st.integers(1, 3), queue=st.integers(1, 4))
    def setup(self, window: int, queue: int) -> None:
        self.app = load_app(self.APP)
        chain = MemoryL1()
        self.signers = [Signer(Ed25519(), os.urandom(32)) for _ in range(2)]
        self.params = ChannelParams(
            l1=chain.format.domain,
            participants=(self.signers[0].public_key, self.signers[1].public_key),
            deposits=(50, 50),
            app=self.app.name,
            app_version=self.app.version,
            challenge_window=10,
        )
        self.fmt = chain.format
        self.limits = ChannelLimits(window, 3, queue)
        self.ch = [
            Channel(self.params, self.app, self.fmt, s, limits=self.limits) for s in self.signers
        ]
        self.log: list[dict[int, tuple[Any, Any]]] = [{}, {}]  # what each persisted
        self.props: list[list[tuple[Any, Any]]] = [[], []]
        self.wire: list[list[bytes]] = [[], []]  # to each party, in order
        self.seen: list[list[bytes]] = [[], []]  # everything ever sent to each party
        self.forced: list[Any] = [None, None]
        for who in (ALICE, BOB):
            self.call(who, lambda c: c.start())

    # -- carrying out -------------------------------------------------------------------

    def call(self, who: int, step: Any) -> Any:
        result = None
        with contextlib.suppress(*EXPECTED):
            result = step(self.ch[who])
        self.drain(who)
        return result

    def drain(self, who: int) -> None:
        chan = self.ch[who]
        while effects := chan.effects():
            for e in effects:
                if isinstance(e, SendMessage):
                    self.wire[1 - who].append(e.data)
                    self.seen[1 - who].append(e.data)
                elif isinstance(e, PersistUpdate):
                    if e.committed:
                        self.log[who][e.update.seq] = (e.update, e.state)
                        self.props[who] = [p for p in self.props[who] if p[0].seq > e.update.seq]
                    else:
                        self.props[who].append((e.update, e.state))
                elif isinstance(e, ServeLog):
                    wanted = range(e.first_seq, e.last_seq + 1)
                    self.call(
                        who, lambda c, w=wanted: c.serve_log([self.log[who][s][0] for s in w])
                    )

    def send(self, to: int, msg: Message) -> None:
        data = encode_message(msg)
        self.seen[to].append(data)
        self.call(to, lambda c: c.receive(data))

    # -- what the parties do ------------------------------------------------------------

    @rule(who=WHO, n=st.integers(0, 40))
    def issue(self, who: int, n: int) -> None:
        self.call(who, lambda c: c.issue(self.command(n)))

    @rule(who=WHO)
    def play_on(self, who: int) -> None:
        state = self.ch[who].state
        if self.APP == "tictactoe" and state is not None:
            free = [k for k, v in enumerate(state[0]) if v == 0][:1]
            for cell in free:
                self.call(who, lambda c, cell=cell: c.issue({"cell": cell}))

    @rule(who=WHO)
    def close(self, who: int) -> None:
        self.call(who, lambda c: c.close())

    @rule(to=WHO, drop=st.booleans())
    def deliver(self, to: int, drop: bool) -> None:
        if self.wire[to]:
            data = self.wire[to].pop(0)
            if not drop:
                self.call(to, lambda c: c.receive(data))

    @rule(to=WHO, k=st.integers(0, 1000))
    def replay(self, to: int, k: int) -> None:
        if self.seen[to]:
            data = self.seen[to][k % len(self.seen[to])]
            self.call(to, lambda c: c.receive(data))

    @rule()
    def reconnect(self) -> None:
        self.wire = [[], []]
        for who in (ALICE, BOB):
            self.call(who, lambda c: c.resync())

    @rule(who=WHO, n=st.one_of(st.none(), st.integers(0, 40)))
    def force(self, who: int, n: int | None) -> None:
        signed = self.call(who, lambda c: c.force_move(None if n is None else self.command(n)))
        if signed is not None:
            self.forced[who] = signed

    @rule(who=WHO)
    def adopt(self, who: int) -> None:
        forced = self.forced[1 - who]
        if forced is not None:
            self.call(who, lambda c: c.adopt_forced_move(forced))

    @rule(who=WHO)
    def restart(self, who: int) -> None:
        old = self.ch[who]
        committed, state = self.log[who][max(self.log[who])] if self.log[who] else (None, None)
        requests = [
            (ref, None if what is CLOSE_MARK else what, what is CLOSE_MARK)
            for ref, what in old._st.requests
        ]
        try:
            self.ch[who] = Channel.restore(
                self.params,
                self.app,
                self.fmt,
                self.signers[who],
                committed=committed,
                state=state,
                proposals=list(self.props[who]),
                requests=requests,
                next_ref=old.next_ref,
                last_peer_ref=old.last_peer_ref,
                limits=self.limits,
            )
        except LocalError:
            return  # what this driver persisted does not fit (it is not a real store)
        self.wire[who] = []
        self.call(who, lambda c: c.resync())

    # -- what the peer crafts with its own key ------------------------------------------

    @rule(to=WHO, n=st.integers(0, 30), good=st.booleans(), ahead=st.integers(0, 3))
    def hostile_hello(self, to: int, n: int, good: bool, ahead: int) -> None:
        head = self.ch[to]._st.head_hash if good else os.urandom(32)
        cid = self.params.channel_id
        self.send(to, Hello(channel_id=cid, next_seq=n, head_hash=head, signed_next=n + ahead))

    @rule(ref=st.integers(0, 30))
    def hostile_denied(self, ref: int) -> None:
        self.send(BOB, Denied(channel_id=self.params.channel_id, ref=ref, reason="no"))

    @rule(ref=st.integers(0, 30), n=st.integers(0, 40), close=st.booleans())
    def hostile_request(self, ref: int, n: int, close: bool) -> None:
        cid = self.params.channel_id
        msg: Message = (
            CloseRequest(channel_id=cid, ref=ref)
            if close
            else Request(channel_id=cid, ref=ref, command=self.command(n))
        )
        self.send(ALICE, msg)

    @rule(n=st.integers(0, 40), final=st.booleans(), gap=st.booleans(), theirs=st.booleans())
    def hostile_propose(self, n: int, final: bool, gap: bool, theirs: bool) -> None:
        """Alice, hostile, proposes to Bob an update on Bob's head, signed by her."""
        bob = self.ch[BOB]._st
        if bob.committed is None:
            return
        state, commands = bob.committed_state, ()
        if not final:
            actor, ref, command = ALICE, 1000 + n, self.command(n)
            if theirs and bob.requests and bob.requests[0][1] is not CLOSE_MARK:
                actor, (ref, command) = BOB, bob.requests[0]
            try:
                state = self.app.apply(state, command, actor)
            except CommandRejected:
                return
            commands = (CommandEntry(actor, ref, command),)
        u = Update(
            channel_id=self.params.channel_id,
            seq=bob.head_seq + 1 + gap,
            prev_hash=bob.head_hash,
            app_id=self.params.app_id,
            commands=commands,
            state_hash=self.app.state_hash(state),
            outcome=self.app.checked_outcome(state, self.params),
            final=final,
        )
        tag = self.signers[ALICE].tag(self.fmt.digest(u, u.body()))
        self.send(BOB, Propose(channel_id=self.params.channel_id, update=u, tag=tag))

    @rule(offset=st.integers(-2, 2))
    def hostile_accept(self, offset: int) -> None:
        """Bob, hostile, counter-signs Alice's oldest proposal, or names another seq."""
        alice = self.ch[ALICE]._st
        if alice.in_flight:
            signed, _, digest, _ = alice.in_flight[0]
            sig = self.signers[BOB].sign(digest)
            cid = self.params.channel_id
            self.send(ALICE, Accept(channel_id=cid, seq=signed.seq + offset, signature=sig))


@pytest.mark.parametrize("app", ["tictactoe", "counter"])
def test_no_input_makes_a_channel_raise_an_internal_error(app: str) -> None:
    machine = type(f"Chaos_{app}", (Chaos,), {"APP": app})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
