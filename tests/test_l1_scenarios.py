"""One set of L1 scenarios (docs/design.md §5), run against every adapter.

Each scenario drives real channel parties (:class:`bfs_smr.runtime.LocalPair` with the
payments app) and a real L1: the embedded :class:`bfs_smr.adapters.memory.MemoryL1`, the same
rules on a SQLite file (:class:`bfs_smr.adapters.local.LocalL1`, each party on its own connection,
with a controllable clock), the Vyper adjudicator on the in-process py-evm chain, and the
same adjudicator on an anvil node installed from npm. Balances are compared net of
transaction fees, so the same expected values hold on every L1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.local import LocalL1
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import (
    Ed25519,
    L1Adapter,
    L1ChannelStatus,
    L1Error,
    L1EventKind,
    SignedUpdate,
    Signer,
)
from bfs_smr.runtime import LocalPair, load_app

#: Gas money each EVM account gets on top of what a scenario mints for it.
GAS_MONEY = 10**17
WINDOW = 1_000


class MemoryNet:
    """The embedded L1."""

    def __init__(self) -> None:
        self.chain = MemoryL1()

    def new_party(self) -> tuple[Signer, L1Adapter]:
        signer = Signer(Ed25519(), os.urandom(32))
        return signer, self.chain.adapter(signer.public_key)

    def mint(self, account: bytes, amount: int) -> None:
        self.chain.mint(account, amount)

    def value(self, account: bytes) -> int:
        return self.chain.balance(account)

    def track(self, adapter: L1Adapter, params: Any) -> None:
        pass

    def advance(self, seconds: int) -> None:
        self.chain.advance(seconds)

    def now(self) -> int:
        return self.chain.now()


class LocalNet(MemoryNet):
    """The local L1 on a SQLite file: each party opens it on its own, as a process would."""

    def __init__(self, path: Path) -> None:
        self.time = 1_000_000
        self.path = path
        self.chain = LocalL1.create(path, clock=self.clock)
        self.opened = [self.chain]

    def clock(self) -> int:
        return self.time

    def new_party(self) -> tuple[Signer, L1Adapter]:
        signer = Signer(Ed25519(), os.urandom(32))
        chain = LocalL1(self.path, clock=self.clock)
        self.opened.append(chain)
        return signer, chain.adapter(signer.public_key)

    def advance(self, seconds: int) -> None:
        self.time += seconds

    def close(self) -> None:
        for chain in self.opened:
            chain.close()


class EvmNet:
    """The adjudicator, freshly deployed on a development chain."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.adapters: dict[bytes, Any] = {}

    def new_party(self) -> tuple[Signer, L1Adapter]:
        from bfs_smr.adapters.evm import Secp256k1

        secret = os.urandom(32)
        signer = Signer(Secp256k1(), secret)
        adapter = self.chain.adapter(secret)
        self.adapters[signer.public_key] = adapter
        self.chain.mint(signer.public_key, GAS_MONEY)
        return signer, adapter

    def mint(self, account: bytes, amount: int) -> None:
        self.chain.mint(account, amount)

    def value(self, account: bytes) -> int:
        """Balance as if no fee had been paid and no gas money given."""
        adapter = self.adapters[account]
        return int(adapter.balance()) + int(adapter.fees_paid) - GAS_MONEY

    def track(self, adapter: Any, params: Any) -> None:
        adapter.track(params)

    def advance(self, seconds: int) -> None:
        self.chain.advance(seconds)

    def now(self) -> int:
        return int(self.chain.now())


@pytest.fixture(params=["memory", "local", "evm-embedded", "evm-anvil"])
def net(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryNet()
    if request.param == "local":
        local = LocalNet(request.getfixturevalue("tmp_path") / "l1.sqlite3")
        request.addfinalizer(local.close)
        return local
    from bfs_smr.adapters.evm import DevChain

    if request.param == "evm-embedded":
        return EvmNet(DevChain.embedded())
    return EvmNet(DevChain.rpc(request.getfixturevalue("anvil_url")))


def make_pair(
    net: Any,
    deposits: tuple[int, int] = (1_000, 0),
    *,
    mint: tuple[int, int] | None = None,
    parties: tuple[tuple[Signer, L1Adapter], tuple[Signer, L1Adapter]] | None = None,
    nonce: int = 0,
) -> LocalPair:
    """Alice and Bob on ``net``, each minted their deposit (or ``mint``), not yet open."""
    (alice, alice_l1), (bob, bob_l1) = parties or (net.new_party(), net.new_party())
    for signer, amount in zip((alice, bob), mint or deposits, strict=True):
        net.mint(signer.public_key, amount)
    pair = LocalPair(
        load_app("payments"),
        alice=alice,
        bob=bob,
        alice_l1=alice_l1,
        bob_l1=bob_l1,
        deposits=deposits,
        challenge_window=WINDOW,
        nonce=nonce,
    )
    net.track(alice_l1, pair.params)
    net.track(bob_l1, pair.params)
    return pair


def opened(net: Any, deposits: tuple[int, int] = (1_000, 0)) -> LocalPair:
    pair = make_pair(net, deposits)
    pair.open()
    return pair


def pay(pair: LocalPair, amount: int, by: str = "alice") -> SignedUpdate:
    party = pair.alice if by == "alice" else pair.bob
    party.chan.issue({"pay": amount})
    pair.pump()
    committed = pair.bob.chan.committed
    assert committed is not None
    return committed


def pay_committed(pair: LocalPair) -> SignedUpdate:
    committed = pair.bob.chan.committed
    assert committed is not None
    return committed


def values(net: Any, pair: LocalPair) -> tuple[int, int]:
    a, b = pair.params.participants
    return net.value(a), net.value(b)


def kinds(pair: LocalPair) -> list[L1EventKind]:
    cid = pair.params.channel_id
    return [e.kind for e in pair.alice.l1.events() if e.channel_id == cid]


# -- open and fund ------------------------------------------------------------------------


def test_open_locks_the_deposit(net: Any) -> None:
    pair = opened(net)
    assert values(net, pair) == (0, 0)
    info = pair.alice.l1.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.OPEN and info.locked == 1_000
    assert kinds(pair) == [L1EventKind.OPENED]


def test_two_sided_funding_with_top_ups(net: Any) -> None:
    pair = make_pair(net, (10, 20))
    pair.alice.chan.start()
    pair.pump()
    cid = pair.alice.l1.open(pair.params)
    assert pair.bob.l1.channel(cid).status is L1ChannelStatus.FUNDING
    with pytest.raises(L1Error, match="deposit must be a positive amount up to"):
        pair.bob.l1.deposit(cid, 21)
    pair.bob.l1.deposit(cid, 5)
    assert pair.bob.l1.channel(cid).status is L1ChannelStatus.FUNDING
    pair.bob.l1.deposit(cid, 15)
    info = pair.bob.l1.channel(cid)
    assert info.status is L1ChannelStatus.OPEN and info.locked == 30
    assert values(net, pair) == (0, 0)
    assert kinds(pair) == [L1EventKind.OPENED, L1EventKind.DEPOSITED, L1EventKind.DEPOSITED]
    with pytest.raises(L1Error, match="not funding"):
        pair.bob.l1.deposit(cid, 1)


def test_either_party_opens_and_the_other_funds(net: Any) -> None:
    pair = make_pair(net, (10, 20))
    cid = pair.bob.l1.open(pair.params)
    assert values(net, pair) == (10, 0)
    assert pair.alice.l1.channel(cid).status is L1ChannelStatus.FUNDING
    pair.alice.l1.deposit(cid, 10)
    assert pair.alice.l1.channel(cid).status is L1ChannelStatus.OPEN
    assert values(net, pair) == (0, 0)


def test_cannot_open_the_same_channel_twice(net: Any) -> None:
    pair = opened(net)
    net.mint(pair.params.participants[0], 1_000)
    with pytest.raises(L1Error, match="exists already"):
        pair.alice.l1.open(pair.params)


def test_only_a_participant_opens(net: Any) -> None:
    pair = make_pair(net)
    _, mallory_l1 = net.new_party()
    net.mint(mallory_l1.account, 1_000)
    net.track(mallory_l1, pair.params)
    with pytest.raises(L1Error, match="only a participant"):
        mallory_l1.open(pair.params)


def test_cannot_lock_value_one_does_not_have(net: Any) -> None:
    deposit = 10**20  # more than any account here has
    pair = make_pair(net, (deposit, 0), mint=(9, 0))
    with pytest.raises(L1Error, match="insufficient funds"):
        pair.alice.l1.open(pair.params)
    with pytest.raises(L1Error, match="no such channel"):
        pair.alice.l1.channel(pair.params.channel_id)
    assert values(net, pair) == (9, 0)


def test_a_channel_never_fully_funded_is_cancelled_and_refunded(net: Any) -> None:
    pair = make_pair(net, (10, 20))
    cid = pair.alice.l1.open(pair.params)
    assert values(net, pair) == (0, 20)
    pair.alice.l1.cancel(cid)
    assert values(net, pair) == (10, 20)
    assert pair.bob.l1.channel(cid).status is L1ChannelStatus.CANCELLED
    with pytest.raises(L1Error, match="cancelled"):
        pair.bob.l1.deposit(cid, 20)
    with pytest.raises(L1Error, match="cancelled"):
        pair.alice.l1.cancel(cid)
    assert kinds(pair)[-1] is L1EventKind.CANCELLED


def test_an_open_channel_cannot_be_cancelled(net: Any) -> None:
    pair = opened(net)
    with pytest.raises(L1Error, match="only a channel still funding"):
        pair.bob.l1.cancel(pair.params.channel_id)


# -- cooperative close ----------------------------------------------------------------------


def test_pay_then_close_cooperatively_pays_at_once_and_only_once(net: Any) -> None:
    pair = opened(net)
    pay(pair, 250)
    pay(pair, 50)
    assert pair.close_cooperatively() == (700, 300)
    assert values(net, pair) == (700, 300)
    info = pair.alice.l1.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.SETTLED and info.payouts == (700, 300)
    assert pair.bob.final is not None
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.cooperative_close(pair.bob.final)
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.unilateral_close(pair.bob.final)
    assert values(net, pair) == (700, 300)
    assert kinds(pair) == [L1EventKind.OPENED, L1EventKind.SETTLED]
    assert pair.alice.l1.events()[-1].payouts == (700, 300)


def test_cooperative_close_needs_a_final_update(net: Any) -> None:
    pair = opened(net)
    committed = pay(pair, 1)
    with pytest.raises(L1Error, match="final"):
        pair.alice.l1.cooperative_close(committed)


def test_cooperative_close_before_full_funding_is_refused(net: Any) -> None:
    pair = make_pair(net, (10, 20))
    pair.alice.chan.start()
    pair.pump()
    pair.alice.l1.open(pair.params)
    pair.alice.chan.close()
    pair.pump()
    assert pair.alice.final is not None
    with pytest.raises(L1Error, match="channel is funding"):
        pair.alice.l1.cooperative_close(pair.alice.final)
    with pytest.raises(L1Error, match="channel is funding"):
        pair.alice.l1.unilateral_close(pair.alice.final)


# -- unilateral close, refute, settle -------------------------------------------------------


def test_stale_close_is_refuted_then_settled_once(net: Any) -> None:
    pair = opened(net)
    stale = pay(pair, 100)
    newest = pay(pair, 100)
    deadline = pair.alice.l1.unilateral_close(stale)
    assert deadline == net.now() + WINDOW
    with pytest.raises(L1Error, match="still open"):
        pair.alice.l1.settle(pair.params.channel_id)
    net.advance(10)
    pair.bob.l1.refute(newest)
    info = pair.bob.l1.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.CLOSING
    assert info.registered_seq == newest.seq
    assert info.deadline == deadline  # refuting does not extend the window
    with pytest.raises(L1Error, match="not newer"):
        pair.alice.l1.refute(stale)
    with pytest.raises(L1Error, match="not newer"):
        pair.alice.l1.refute(newest)
    with pytest.raises(L1Error, match="not open"):
        pair.alice.l1.unilateral_close(newest)
    net.advance(deadline - net.now())
    with pytest.raises(L1Error, match="ended"):
        pair.bob.l1.refute(newest)
    assert pair.alice.l1.settle(pair.params.channel_id) == (800, 200)
    assert values(net, pair) == (800, 200)
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.settle(pair.params.channel_id)
    assert values(net, pair) == (800, 200)
    assert kinds(pair) == [
        L1EventKind.OPENED,
        L1EventKind.CLOSING_STARTED,
        L1EventKind.REFUTED,
        L1EventKind.SETTLED,
    ]
    events = [e for e in pair.bob.l1.events() if e.channel_id == pair.params.channel_id]
    assert (events[1].seq, events[1].deadline) == (stale.seq, deadline)
    assert (events[2].seq, events[2].deadline) == (newest.seq, deadline)
    assert events[3].payouts == (800, 200)


def test_an_unanswered_close_settles_after_the_window(net: Any) -> None:
    pair = opened(net, (500, 500))
    pay(pair, 200, by="bob")
    deadline = pair.bob.l1.unilateral_close(pay_committed(pair))
    assert values(net, pair) == (0, 0)
    net.advance(deadline - net.now())
    assert pair.alice.l1.settle(pair.params.channel_id) == (700, 300)
    assert values(net, pair) == (700, 300)


def test_a_final_update_during_the_window_closes_at_once(net: Any) -> None:
    pair = opened(net)
    stale = pay(pair, 1)
    pair.alice.chan.close()
    pair.pump()
    pair.alice.l1.unilateral_close(stale)
    assert pair.bob.final is not None
    pair.bob.l1.refute(pair.bob.final)
    info = pair.alice.l1.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.SETTLED and info.payouts == (999, 1)
    assert values(net, pair) == (999, 1)


def test_a_unilateral_close_with_a_final_update_pays_at_once(net: Any) -> None:
    pair = opened(net)
    pair.alice.chan.close()
    pair.pump()
    assert pair.alice.final is not None
    pair.alice.l1.unilateral_close(pair.alice.final)
    assert pair.alice.l1.channel(pair.params.channel_id).payouts == (1_000, 0)
    assert values(net, pair) == (1_000, 0)


def test_settle_needs_a_closing_channel(net: Any) -> None:
    pair = opened(net)
    with pytest.raises(L1Error, match="not closing"):
        pair.alice.l1.settle(pair.params.channel_id)
    with pytest.raises(L1Error, match="not closing"):
        pair.alice.l1.refute(pay(pair, 1))


# -- rejected updates -------------------------------------------------------------------------


def test_a_half_signed_update_is_refused(net: Any) -> None:
    pair = opened(net)
    committed = pay(pair, 100)
    for signatures in ((committed.signatures[0], None), (None, committed.signatures[1])):
        half = SignedUpdate(committed.update, signatures)
        with pytest.raises(L1Error, match="signed by both"):
            pair.alice.l1.unilateral_close(half)
    assert pair.alice.l1.channel(pair.params.channel_id).status is L1ChannelStatus.OPEN


def test_an_update_of_another_channel_is_refused(net: Any) -> None:
    """Same two parties, two channels: a signature never carries over (I5, docs/design.md §4)."""
    first = opened(net)
    committed = pay(first, 400)
    parties = ((first.alice.signer, first.alice.l1), (first.bob.signer, first.bob.l1))
    second = make_pair(net, parties=parties, nonce=1)
    second.open()
    cid = second.params.channel_id
    assert cid != first.params.channel_id
    moved = SignedUpdate(
        dataclasses.replace(committed.update, channel_id=cid), committed.signatures
    )
    with pytest.raises(L1Error, match="signed by both"):
        second.alice.l1.unilateral_close(moved)
    assert second.alice.l1.channel(cid).status is L1ChannelStatus.OPEN


def test_an_update_whose_outcome_does_not_conserve_is_refused(net: Any) -> None:
    pair = opened(net)
    committed = pay(pair, 100)
    forged = dataclasses.replace(committed.update, outcome=(1_000, 1_000))
    digest = pair.alice.l1.format.digest(forged, forged.body())
    both = SignedUpdate(forged, (pair.alice.signer.sign(digest), pair.bob.signer.sign(digest)))
    with pytest.raises(L1Error, match="outcome does not pay out exactly the locked value"):
        pair.alice.l1.unilateral_close(both)


def test_value_is_conserved_through_a_dispute(net: Any) -> None:
    pair = opened(net, (400, 600))
    stale = pay(pair, 100)
    pay(pair, 300, by="bob")
    pair.alice.l1.unilateral_close(stale)
    assert values(net, pair) == (0, 0)
    pair.bob.l1.refute(pay_committed(pair))
    net.advance(WINDOW)
    payouts = pair.bob.l1.settle(pair.params.channel_id)
    assert payouts == (600, 400)
    assert sum(values(net, pair)) == 1_000
