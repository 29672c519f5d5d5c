"""The Vyper adjudicator refuses every bad transaction (and its artifact never drifts).

Each rejection is sent as a real transaction (simulated first by the adapter, as every
transaction is) against the committed bytecode, on the in-process py-evm chain and on an
anvil node installed from npm, and must revert with the contract's reason and change
nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.evm import (
    DevChain,
    EvmAdapter,
    EvmFormat,
    Secp256k1,
    channel_key,
    deployment_block,
)
from bfs_smr.adapters.evm import _adapter as evm_adapter
from bfs_smr.adapters.evm._adapter import params_tuple, sig_tuple, state_tuple
from bfs_smr.adapters.evm._crypto import SECP256K1_N
from bfs_smr.adapters.evm.artifact import (
    RULES_SOURCES,
    compile_artifact,
    load_artifact,
    load_rules_artifact,
)
from eth_utils.crypto import keccak

from bfs_smr import (
    ChannelParams,
    L1ChannelStatus,
    L1Error,
    L1EventKind,
    SignedUpdate,
    Update,
    hash_bytes,
)
from bfs_smr.plugins import load_app

GAS_MONEY = 10**18
DEPOSIT = 10**15
WINDOW = 600


def new_chain(kind: str, request: pytest.FixtureRequest, **embedded: Any) -> DevChain:
    if kind == "embedded":
        return DevChain.embedded(**embedded)
    return DevChain.rpc(request.getfixturevalue("anvil_url"))


@pytest.fixture(params=["embedded", "anvil"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclasses.dataclass
class World:
    """A chain, Alice, Bob and Mallory, and a channel between Alice and Bob."""

    chain: DevChain
    secrets: dict[str, bytes]
    adapters: dict[str, EvmAdapter]
    params: ChannelParams

    @property
    def alice(self) -> EvmAdapter:
        return self.adapters["alice"]

    @property
    def bob(self) -> EvmAdapter:
        return self.adapters["bob"]

    @property
    def mallory(self) -> EvmAdapter:
        return self.adapters["mallory"]

    def update(self, seq: int, paid: int, *, final: bool = False) -> Update:
        return Update(
            channel_id=self.params.channel_id,
            seq=seq,
            prev_hash=hash_bytes(b"prev" + bytes([seq])),
            app_id=self.params.app_id,
            commands=(),
            state_hash=hash_bytes(b"state" + bytes([seq])),
            outcome=(DEPOSIT - paid, paid),
            final=final,
        )

    def sign(
        self, update: Update, *, by: tuple[str, str] = ("alice", "bob"), fmt: Any = None
    ) -> SignedUpdate:
        fmt = fmt or self.alice.format
        digest = fmt.digest(update, update.body())
        sigs = tuple(fmt.scheme.sign(self.secrets[name], digest) for name in by)
        return SignedUpdate(update, (sigs[0], sigs[1]))

    def balance(self, name: str) -> int:
        return self.adapters[name].balance()

    def contract_balance(self) -> int:
        return int(self.chain.w3.eth.get_balance(self.alice.contract.address))


def make_world(chain: DevChain, secrets: dict[str, bytes] | None = None) -> World:
    secrets = secrets or {name: os.urandom(32) for name in ("alice", "bob", "mallory")}
    adapters = {name: chain.adapter(secret) for name, secret in secrets.items()}
    for adapter in adapters.values():
        chain.mint(adapter.account, GAS_MONEY)
    params = ChannelParams(
        l1=adapters["alice"].format.domain,
        participants=(adapters["alice"].account, adapters["bob"].account),
        deposits=(DEPOSIT, 0),
        app="payments",
        app_version=1,
        challenge_window=WINDOW,
    )
    for adapter in adapters.values():
        adapter.track(params)
    return World(chain, secrets, adapters, params)


@pytest.fixture
def world(kind: str, request: pytest.FixtureRequest) -> World:
    w = make_world(new_chain(kind, request))
    w.alice.open(w.params)
    return w


def send_close(
    w: World,
    sender: EvmAdapter,
    fn: str,
    signed: SignedUpdate,
    sigs: Any = None,
    *,
    reveal: bytes = bytes(32),
) -> None:
    """Send ``fn`` with ``signed``, or with raw ``(v, r, s)`` tuples ``sigs`` (and, for a
    unilateral close, ``reveal``)."""
    a, b = sigs or (sig_tuple(signed.signatures[0]), sig_tuple(signed.signatures[1]))
    args: list[Any] = [params_tuple(w.params), state_tuple(signed), a, b]
    if fn == "unilateral_close":
        args.append(reveal)
    sender.send(getattr(sender.contract.functions, fn)(*args))


# -- the artifact ---------------------------------------------------------------------------


def test_committed_artifact_is_the_compiled_source() -> None:
    fresh = compile_artifact()
    committed = load_artifact()
    assert fresh["source_sha256"] == committed["source_sha256"], (
        "Adjudicator.vy changed: run `python -m bfs_smr.adapters.evm` to rebuild Adjudicator.json"
    )
    assert fresh == committed, "Adjudicator.json drifted: run `python -m bfs_smr.adapters.evm`"


@pytest.mark.parametrize("source", RULES_SOURCES, ids=lambda p: p.stem)
def test_committed_rules_artifacts_are_the_compiled_sources(source: Path) -> None:
    """The bundled apps' rules contracts are rebuilt with the adjudicator, and what an app
    names in ``l1_rules`` is that artifact (what a non-editable install ships)."""
    fresh = compile_artifact(source)
    committed = json.loads(source.with_suffix(".json").read_text(encoding="utf-8"))
    assert fresh == committed, (
        f"{source.name} and its artifact drifted: run `python -m bfs_smr.adapters.evm`"
    )
    app = load_app(source.stem.lower())
    assert load_rules_artifact(app) == committed


def test_python_digest_and_key_are_the_contracts(world: World) -> None:
    for final in (False, True):
        u = world.update(5, 1234, final=final)
        on_chain = world.alice.contract.functions.digest(
            world.params.channel_id, state_tuple(SignedUpdate(u, (None, None)))
        ).call()
        assert bytes(on_chain) == world.alice.format.digest(u, u.body())
    key = world.alice.contract.functions.channel_key(params_tuple(world.params)).call()
    assert bytes(key) == channel_key(world.params)


# -- the scheme -------------------------------------------------------------------------------


def test_secp256k1_signs_low_s_and_verifies_exactly_what_ecrecover_accepts() -> None:
    scheme = Secp256k1()
    secret, other = os.urandom(32), os.urandom(32)
    address = scheme.public_key(secret)
    assert len(address) == 20
    for i in range(20):
        digest = hash_bytes(bytes([i]))
        sig = scheme.sign(secret, digest)
        assert len(sig) == 65 and sig[64] in (27, 28)
        assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2
        assert scheme.verify(address, digest, sig)
        assert not scheme.verify(scheme.public_key(other), digest, sig)
        assert not scheme.verify(address, hash_bytes(b"other"), sig)
        assert not scheme.verify(address, digest, high_s(sig))
        assert not scheme.verify(address, digest, sig[:64] + bytes([sig[64] - 27]))
        assert not scheme.verify(address, digest, sig[:64])
        assert not scheme.verify(address[:19], digest, sig)
        assert not scheme.verify(address, digest, bytes(32) + sig[32:])


def high_s(sig: bytes) -> bytes:
    """The malleable twin of ``sig``: the same signer, s' = n - s, parity flipped."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


# -- rejected signatures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper, reason",
    [
        ("high_s", "signature has a high s"),
        ("bad_v", "signature has a bad v"),
        ("zero_address", "signature does not recover"),
        ("wrong_signer", "update is not signed by both participants"),
        ("swapped", "update is not signed by both participants"),
        ("other_chain", "update is not signed by both participants"),
        ("tampered_outcome", "update is not signed by both participants"),
    ],
)
def test_bad_signatures_revert(world: World, tamper: str, reason: str) -> None:
    for fn, final in (("unilateral_close", False), ("cooperative_close", True)):
        signed, sigs = tampered(world, world.update(3, 300, final=final), tamper)
        with pytest.raises(L1Error, match=reason):
            send_close(world, world.alice, fn, signed, sigs)
    assert world.alice.channel(world.params.channel_id).status is L1ChannelStatus.OPEN
    assert world.contract_balance() == DEPOSIT


def tampered(w: World, u: Update, tamper: str) -> tuple[SignedUpdate, Any]:
    """``u`` signed by both, then spoiled as ``tamper`` says; returns it and raw sigs."""
    signed = w.sign(u)
    a, b = sig_tuple(signed.signatures[0]), sig_tuple(signed.signatures[1])
    if tamper == "high_s":
        # The twin is a valid ECDSA signature by Bob: ecrecover alone would accept it.
        b = sig_tuple(high_s(signed.signatures[1] or b""))
    elif tamper == "bad_v":
        b = (b[0] + 2, b[1], b[2])
    elif tamper == "zero_address":
        b = (27, bytes(32), (1).to_bytes(32, "big"))
    elif tamper == "wrong_signer":
        signed = w.sign(u, by=("alice", "mallory"))
        a, b = sig_tuple(signed.signatures[0]), sig_tuple(signed.signatures[1])
    elif tamper == "swapped":
        a, b = b, a
    elif tamper == "other_chain":
        signed = w.sign(u, fmt=EvmFormat(w.alice.chain_id + 1, w.alice.format.contract))
        a, b = sig_tuple(signed.signatures[0]), sig_tuple(signed.signatures[1])
    elif tamper == "tampered_outcome":
        signed = SignedUpdate(dataclasses.replace(u, outcome=(DEPOSIT - 900, 900)), (None, None))
    return signed, (a, b)


def test_a_signature_for_another_adjudicator_reverts(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Two adjudicators on one chain: an update signed for one is worthless at the other."""
    w = make_world(new_chain(kind, request))
    w.alice.open(w.params)
    other = DevChain(w.chain.w3, kind=w.chain.kind).deploy()
    assert other.address != w.chain.address
    fmt = EvmFormat(w.alice.chain_id, other.address)
    signed = w.sign(w.update(2, 10), fmt=fmt)
    with pytest.raises(L1Error, match="not signed by both"):
        send_close(w, w.bob, "unilateral_close", signed)
    send_close(w, w.bob, "unilateral_close", w.sign(w.update(2, 10)))  # the right format works


# -- phases and payouts ---------------------------------------------------------------------


def test_nothing_is_paid_twice(world: World) -> None:
    stale, newest = world.sign(world.update(1, 100)), world.sign(world.update(2, 200))
    send_close(world, world.alice, "unilateral_close", stale)
    send_close(world, world.bob, "refute", newest)
    world.chain.advance(WINDOW)
    bob_before = world.balance("bob")
    assert world.mallory.settle(world.params.channel_id) == (DEPOSIT - 200, 200)
    assert world.balance("bob") == bob_before + 200
    assert world.contract_balance() == 0
    bob_before = world.balance("bob") + world.bob.fees_paid
    final = world.sign(world.update(3, 300, final=True))
    for attempt in (
        lambda: world.bob.settle(world.params.channel_id),
        lambda: send_close(world, world.bob, "cooperative_close", final),
        lambda: send_close(world, world.bob, "refute", final),
        lambda: send_close(world, world.bob, "unilateral_close", final),
        lambda: world.bob.cancel(world.params.channel_id),
        lambda: world.bob.deposit(world.params.channel_id, 1),
    ):
        with pytest.raises(L1Error, match="channel is settled"):
            attempt()
    assert world.balance("bob") + world.bob.fees_paid == bob_before  # nothing was sent
    assert world.contract_balance() == 0


def test_an_open_with_the_same_id_and_other_participants_cannot_block_or_hijack(
    kind: str, request: pytest.FixtureRequest
) -> None:
    w = make_world(new_chain(kind, request))
    fake = list(params_tuple(w.params))
    fake[1] = w.mallory.contract.w3.to_checksum_address(w.mallory.account)  # Mallory, Bob
    # Mallory front-runs with Alice's channel id: she occupies another key, not Alice's.
    w.mallory.send(w.mallory.contract.functions.open(tuple(fake)), value=DEPOSIT)
    with pytest.raises(L1Error, match="only a participant"):
        w.mallory.send(w.mallory.contract.functions.open(params_tuple(w.params)), value=DEPOSIT)
    w.alice.open(w.params)  # not blocked
    assert w.bob.channel(w.params.channel_id).status is L1ChannelStatus.OPEN
    # Bob's adapter reports only the real channel's events under that id.
    mine = [e for e in w.bob.events() if e.channel_id == w.params.channel_id]
    assert [e.kind for e in mine] == [L1EventKind.OPENED]
    # The real parties' signatures mean nothing on the fake channel.
    signed = w.sign(w.update(1, 1, final=True))
    call = w.mallory.contract.functions.cooperative_close(
        tuple(fake),
        state_tuple(signed),
        sig_tuple(signed.signatures[0]),
        sig_tuple(signed.signatures[1]),
    )
    with pytest.raises(L1Error, match="not signed by both"):
        w.mallory.send(call)


OPEN_REJECTIONS = {
    "zero_address": ("b", "0x" + "00" * 20, 0, "a participant is the zero address"),
    "same_twice": ("b", "alice", 0, "a channel has two distinct participants"),
    "no_window": ("window", 0, 0, "the window must be positive"),
    "not_a_participant": ("a", "mallory", 0, "only a participant can open the channel"),
    "too_much": (None, None, DEPOSIT + 1, "deposit is more than the amount due"),
    # a deadline past 64 bits would leave the funds stuck: the window is bounded at open
    "window_too_long": ("window", 2**32, 0, "the window is too long"),
    "largest_window_overflowing_before": ("window", 2**64 - 1, 0, "the window is too long"),
    "nothing_locked": ("deposits", (0, 0), 0, "a channel must lock some value"),
}


@pytest.mark.parametrize("case", sorted(OPEN_REJECTIONS))
def test_open_rejections(kind: str, request: pytest.FixtureRequest, case: str) -> None:
    field, value, amount, reason = OPEN_REJECTIONS[case]
    w = make_world(new_chain(kind, request))
    p = dict(
        zip(
            ("channel_id", "a", "b", "deposit_a", "deposit_b", "window", "rules", "watch"),
            params_tuple(w.params),
            strict=True,
        )
    )
    if field == "deposits":
        p["deposit_a"], p["deposit_b"] = value
    elif field is not None:
        if value in ("alice", "mallory"):
            value = w.adapters[value].contract.w3.to_checksum_address(w.adapters[value].account)
        p[field] = value
    with pytest.raises(L1Error, match=reason):
        w.alice.send(w.alice.contract.functions.open(tuple(p.values())), value=amount)
    assert w.contract_balance() == 0


def test_window_rules(world: World) -> None:
    send_close(world, world.alice, "unilateral_close", world.sign(world.update(4, 40)))
    deadline = world.alice.channel(world.params.channel_id).deadline
    assert deadline is not None
    with pytest.raises(L1Error, match="the window is still open"):
        world.bob.settle(world.params.channel_id)
    for seq in (3, 4):
        with pytest.raises(L1Error, match="seq is not newer than the registered seq"):
            send_close(world, world.bob, "refute", world.sign(world.update(seq, 30)))
    world.chain.advance(deadline - world.chain.now())
    with pytest.raises(L1Error, match="the window has ended"):
        send_close(world, world.bob, "refute", world.sign(world.update(5, 50)))
    assert world.bob.settle(world.params.channel_id) == (DEPOSIT - 40, 40)


# -- the watch secret -------------------------------------------------------------------------


def watched_world(chain: DevChain, secret: bytes) -> World:
    """A world whose channel commits to the watch secret ``secret``, opened by Alice."""
    w = make_world(chain)
    w.params = dataclasses.replace(w.params, watch=w.alice.format.watch_commitment(secret))
    for adapter in w.adapters.values():
        adapter.track(w.params)
    w.alice.open(w.params)
    return w


def test_the_watch_commitment_is_keccak_and_bound_into_the_key() -> None:
    w = make_world(DevChain.embedded())
    secret = os.urandom(32)
    assert w.alice.format.watch_commitment(secret) == keccak(secret)
    keys = set()
    for watch in (b"", keccak(secret), keccak(os.urandom(32))):
        params = dataclasses.replace(w.params, watch=watch)
        on_chain = w.alice.contract.functions.channel_key(params_tuple(params)).call()
        assert bytes(on_chain) == channel_key(params)
        keys.add(channel_key(params))
    assert len(keys) == 3  # another commitment is another channel


def test_a_unilateral_close_must_reveal_the_watch_secret_on_chain() -> None:
    secret = os.urandom(32)
    w = watched_world(DevChain.embedded(), secret)
    cid = w.params.channel_id
    stale = w.sign(w.update(1, 100))
    # Sent past the adapter's own check: the contract refuses by itself.
    for reveal in (bytes(32), os.urandom(32), w.params.watch):
        with pytest.raises(L1Error, match="must reveal the channel's watch secret"):
            send_close(w, w.mallory, "unilateral_close", stale, reveal=reveal)
    assert w.alice.channel(cid).status is L1ChannelStatus.OPEN
    # A watchtower's adapter, which does not track the channel yet, reads the log too.
    tower = w.chain.adapter(os.urandom(32))
    send_close(w, w.mallory, "unilateral_close", stale, reveal=secret)  # anyone, with it
    assert w.alice.channel(cid).status is L1ChannelStatus.CLOSING
    for reader in (w.alice, tower):
        (event,) = [e for e in reader.events() if e.kind is L1EventKind.CLOSING_STARTED]
        assert (event.channel_id, event.seq, event.reveal) == (cid, 1, secret)


def test_the_adapter_refuses_a_wrong_reveal_before_spending_gas() -> None:
    secret = os.urandom(32)
    w = watched_world(DevChain.embedded(), secret)
    cid = w.params.channel_id
    final = w.sign(w.update(2, 200, final=True))
    sent = len(w.bob.receipts)
    for reveal in (None, bytes(32), os.urandom(32), w.params.watch, secret[:31], b"x" * 33):
        with pytest.raises(L1Error, match=r"^a unilateral close must reveal the channel's watch"):
            w.bob.unilateral_close(final, reveal)
    assert (len(w.bob.receipts), w.bob.fees_paid) == (sent, 0)
    assert w.alice.channel(cid).status is L1ChannelStatus.OPEN
    # A final update pays at once, still only with the secret.
    w.bob.unilateral_close(final, secret)
    assert w.alice.channel(cid).payouts == (DEPOSIT - 200, 200)


def test_a_channel_without_a_commitment_reveals_nothing(world: World) -> None:
    stale = world.sign(world.update(1, 100))
    world.alice.unilateral_close(stale, os.urandom(32))  # ignored, as on the embedded L1
    (event,) = [e for e in world.bob.events() if e.kind is L1EventKind.CLOSING_STARTED]
    assert (event.seq, event.reveal) == (1, None)


# -- hostile recipients ---------------------------------------------------------------------

HOSTILE = """\
#pragma version 0.4.3
#pragma evm-version cancun

interface Adjudicator:
    def withdraw(): nonpayable

target: public(address)
received: public(uint256)
reentered: public(uint256)


@external
def arm(target: address):
    self.target = target


@external
def pull():
    extcall Adjudicator(self.target).withdraw()


@payable
@external
def __default__():
    # Writing storage needs more gas than the stipend a payout forwards: under it this
    # recipient refuses. Given all the gas (withdraw), it tries to withdraw again.
    self.received += msg.value
    ok: bool = raw_call(self.target, method_id("withdraw()"), revert_on_failure=False)
    if ok:
        self.reentered += 1
"""


def hostile_code() -> tuple[list[Any], bytes]:
    import vyper  # type: ignore[import-untyped]

    out = vyper.compile_code(HOSTILE, output_formats=["abi", "bytecode_runtime"])
    return out["abi"], bytes.fromhex(out["bytecode_runtime"].removeprefix("0x"))


def test_a_hostile_recipient_neither_reenters_nor_blocks_the_other_payout(
    kind: str, request: pytest.FixtureRequest
) -> None:
    abi, code = hostile_code()
    secrets = {name: os.urandom(32) for name in ("alice", "bob", "mallory")}
    bob_address = Secp256k1().public_key(secrets["bob"])
    if kind == "embedded":
        chain = DevChain.embedded(genesis_code={bob_address: code})
    else:
        chain = new_chain(kind, request)
    w = make_world(chain, secrets)
    w.alice.open(w.params)
    final = w.sign(w.update(9, 300, final=True))  # Bob signs while his address is a key
    if kind != "embedded":
        chain.set_code(bob_address, code)
    hostile = chain.w3.eth.contract(
        address=w.bob.contract.w3.to_checksum_address(bob_address), abi=abi
    )
    hostile.functions.arm(w.alice.contract.address).transact({"from": chain.faucet})
    alice_before, bob_before = w.balance("alice"), w.balance("bob")
    received = hostile.functions.received().call()
    reentered = hostile.functions.reentered().call()  # the faucet's gas money counted too

    send_close(w, w.alice, "cooperative_close", final)

    # Alice is paid in the closing transaction; Bob's refusal is credited, not lost.
    assert (
        w.balance("alice")
        == alice_before
        + DEPOSIT
        - 300
        - w.alice.receipts[-1]["gasUsed"] * w.alice.receipts[-1]["effectiveGasPrice"]
    )
    assert w.balance("bob") == bob_before
    assert w.alice.contract.functions.owed(hostile.address).call() == 300
    assert w.contract_balance() == 300
    # Other value sits in the adjudicator: a re-entrant withdraw would have something to take.
    bystander = dataclasses.replace(w.params, participants=(w.alice.account, w.mallory.account))
    w.alice.track(bystander)
    w.alice.open(bystander)
    assert w.contract_balance() == 300 + DEPOSIT
    # Withdrawing forwards all gas: the recipient re-enters, and gets nothing more.
    hostile.functions.pull().transact({"from": chain.faucet})
    assert w.balance("bob") == bob_before + 300
    assert hostile.functions.received().call() == received + 300
    assert hostile.functions.reentered().call() == reentered
    assert w.alice.contract.functions.owed(hostile.address).call() == 0
    assert w.contract_balance() == DEPOSIT
    with pytest.raises(L1Error, match="nothing is owed"):
        w.mallory.withdraw()


def test_events_start_at_the_deployment_block_and_are_read_in_ranges(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make_world(new_chain(kind, request))
    deployed = int(w.chain.deploy_receipt["blockNumber"])
    assert deployment_block(w.chain.w3, w.chain.address) == deployed
    with pytest.raises(L1Error, match="no contract"):
        deployment_block(w.chain.w3, os.urandom(20))
    w.alice.open(w.params)
    opened_in = int(w.alice.receipts[-1]["blockNumber"])
    for _ in range(3):
        w.chain.advance(1)
    everything = w.bob.events()
    assert [e.kind for e in everything][:1] == [L1EventKind.OPENED]
    # Ranges of two blocks give the same events as one query.
    monkeypatch.setattr(evm_adapter, "LOG_RANGE", 2)
    queries: list[tuple[int, int]] = []
    fresh = w.chain.adapter(w.secrets["mallory"])
    fresh.track(w.params)
    real = fresh.w3.eth.get_logs

    def counted(filter_params: Any) -> Any:
        queries.append((filter_params["fromBlock"], filter_params["toBlock"]))
        return real(filter_params)

    monkeypatch.setattr(fresh.w3.eth, "get_logs", counted)
    assert fresh.events() == everything
    latest = int(w.chain.w3.eth.block_number)
    assert queries[0][0] == deployed  # not block 0
    assert queries[-1][1] == latest
    assert all(b - a == 1 or b == latest for a, b in queries), queries
    assert all(q[1] + 1 == n[0] for q, n in itertools.pairwise(queries)), queries
    # A later start sees only what came after it.
    after = EvmAdapter(w.chain.w3, w.chain.address, w.secrets["mallory"], from_block=opened_in)
    assert [e.kind for e in after.events()] == [L1EventKind.OPENED]
    after = EvmAdapter(w.chain.w3, w.chain.address, w.secrets["mallory"], from_block=opened_in + 1)
    assert after.events() == []


def test_a_dropped_rpc_connection_is_an_l1_error() -> None:
    """Regression (issue 11, defect 10): with the RPC endpoint gone, every read and
    transaction of the adapter raises L1Error (which a node retries), not the transport's
    own exception (which ended the node's L1 watch)."""
    from web3.providers.rpc import HTTPProvider

    chain = DevChain.embedded()
    secret = os.urandom(32)
    adapter = chain.adapter(secret)
    cid = adapter.track(
        ChannelParams(
            l1=adapter.format.domain,
            participants=(adapter.account, b"\x01" * 20),
            deposits=(0, 0),
            app="payments",
            app_version=1,
        )
    )
    adapter.w3.provider = HTTPProvider(
        "http://127.0.0.1:9",
        request_kwargs={"timeout": 2},
        exception_retry_configuration=None,
    )
    calls = {
        "now": adapter.now,
        "balance": adapter.balance,
        "events": adapter.events,
        "channel": lambda: adapter.channel(cid),
        "deposit": lambda: adapter.deposit(cid, 1),
        "cancel": lambda: adapter.cancel(cid),
    }
    for name, call in calls.items():
        with pytest.raises(L1Error, match="L1 unreachable") as caught:
            call()
        assert "\n" not in str(caught.value), name
