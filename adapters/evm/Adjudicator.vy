#pragma version 0.4.3
#pragma evm-version cancun
"""
@title bfs-smr adjudicator
@notice Holds the deposits of two-party channels and pays out the newest doubly-signed
        outcome it is shown (docs/design.md §5). One storage slot per channel.
@dev    A channel lives under key = keccak256(abi_encode(channel_id, a, b, deposit_a,
        deposit_b, window)), so the parameters that matter on chain are bound by the key
        and nobody can occupy a channel id with other parameters. Its slot packs:
          bits 0..7     phase (0 none, 1 funding, 2 open, 3 closing, 4 settled, 5 cancelled)
          funding/open: bits 8..103 deposited by a, bits 104..199 deposited by b
          closing:      bits 8..71 registered seq, bits 72..135 deadline,
                        bits 136..231 registered payout to a (b gets the rest)
          settled:      bits 8..103 paid to a, bits 104..199 paid to b
        Signatures are over keccak256(0x19 0x00 self abi_encode(chain.id, channel_id, seq,
        out_a, out_b, final, entry_hash)) (EIP-191 version 0).
"""

struct Params:
    channel_id: bytes32
    a: address
    b: address
    deposit_a: uint96
    deposit_b: uint96
    window: uint64

struct State:
    seq: uint64
    out_a: uint96
    out_b: uint96
    final: bool
    entry_hash: bytes32

struct Sig:
    v: uint8
    r: bytes32
    s: bytes32

event Opened:
    channel_id: indexed(bytes32)
    key: bytes32

event Deposited:
    channel_id: indexed(bytes32)
    key: bytes32

event ClosingStarted:
    channel_id: indexed(bytes32)
    key: bytes32
    seq: uint64
    deadline: uint64

event Refuted:
    channel_id: indexed(bytes32)
    key: bytes32
    seq: uint64
    deadline: uint64

event Settled:
    channel_id: indexed(bytes32)
    key: bytes32
    payout_a: uint256
    payout_b: uint256

event Cancelled:
    channel_id: indexed(bytes32)
    key: bytes32

NO_CHANNEL: constant(uint256) = 0
FUNDING: constant(uint256) = 1
OPEN: constant(uint256) = 2
CLOSING: constant(uint256) = 3
SETTLED: constant(uint256) = 4
CANCELLED: constant(uint256) = 5

MASK64: constant(uint256) = (1 << 64) - 1
MASK96: constant(uint256) = (1 << 96) - 1
# secp256k1 group order / 2: larger s values are the malleable twin of a valid signature.
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

# key -> packed channel slot (see the module docstring)
channels: public(HashMap[bytes32, uint256])
# payouts a recipient refused (e.g. a contract whose receive needs more than the stipend)
owed: public(HashMap[address, uint256])


@pure
@internal
def _key(p: Params) -> bytes32:
    return keccak256(abi_encode(p.channel_id, p.a, p.b, p.deposit_a, p.deposit_b, p.window))


@pure
@external
def channel_key(p: Params) -> bytes32:
    return self._key(p)


@view
@internal
def _digest(channel_id: bytes32, u: State) -> bytes32:
    return keccak256(
        concat(
            x"1900",
            convert(self, bytes20),
            abi_encode(chain.id, channel_id, u.seq, u.out_a, u.out_b, u.final, u.entry_hash),
        )
    )


@view
@external
def digest(channel_id: bytes32, u: State) -> bytes32:
    return self._digest(channel_id, u)


@pure
@internal
def _signer(digest: bytes32, sig: Sig) -> address:
    assert convert(sig.s, uint256) <= HALF_N, "signature has a high s"
    assert sig.v == 27 or sig.v == 28, "signature has a bad v"
    signer: address = ecrecover(digest, sig.v, sig.r, sig.s)
    assert signer != empty(address), "signature does not recover"
    return signer


@view
@internal
def _check_update(p: Params, u: State, sa: Sig, sb: Sig):
    assert convert(u.out_a, uint256) + convert(u.out_b, uint256) == convert(
        p.deposit_a, uint256
    ) + convert(p.deposit_b, uint256), "outcome does not pay out exactly the locked value"
    digest: bytes32 = self._digest(p.channel_id, u)
    assert self._signer(digest, sa) == p.a, "update is not signed by both participants"
    assert self._signer(digest, sb) == p.b, "update is not signed by both participants"


@internal
def _send(to: address, amount: uint256):
    if amount == 0:
        return
    # Only the stipend: a recipient can neither re-enter nor burn the caller's gas; one
    # that refuses is credited and withdraws later, so it cannot block the other payout.
    ok: bool = raw_call(to, b"", value=amount, gas=0, revert_on_failure=False)
    if not ok:
        self.owed[to] += amount


@internal
def _pay(key: bytes32, p: Params, out_a: uint256, out_b: uint256):
    # effects before interactions
    self.channels[key] = SETTLED | (out_a << 8) | (out_b << 104)
    log Settled(channel_id=p.channel_id, key=key, payout_a=out_a, payout_b=out_b)
    self._send(p.a, out_a)
    self._send(p.b, out_b)


@view
@internal
def _require_phase(slot: uint256, want: uint256, message: String[64]):
    phase: uint256 = slot & 255
    assert phase != NO_CHANNEL, "no such channel"
    assert phase != SETTLED, "channel is settled"
    assert phase != CANCELLED, "channel is cancelled"
    assert phase != FUNDING or want == FUNDING, "channel is funding"
    assert phase == want, message


@payable
@external
@nonreentrant
def open(p: Params):
    assert msg.sender == p.a or msg.sender == p.b, "only a participant can open the channel"
    assert p.a != p.b, "a channel has two distinct participants"
    # nobody can sign as the zero address: such a channel could never close
    assert p.a != empty(address) and p.b != empty(address), "a participant is the zero address"
    assert p.window > 0, "the window must be positive"
    key: bytes32 = self._key(p)
    assert self.channels[key] == 0, "a channel with this id exists already"
    dep_a: uint256 = 0
    dep_b: uint256 = 0
    if msg.sender == p.a:
        dep_a = msg.value
    else:
        dep_b = msg.value
    assert dep_a <= convert(p.deposit_a, uint256) and dep_b <= convert(
        p.deposit_b, uint256
    ), "deposit is more than the amount due"
    phase: uint256 = FUNDING
    if dep_a == convert(p.deposit_a, uint256) and dep_b == convert(p.deposit_b, uint256):
        phase = OPEN
    self.channels[key] = phase | (dep_a << 8) | (dep_b << 104)
    log Opened(channel_id=p.channel_id, key=key)


@payable
@external
@nonreentrant
def deposit(p: Params):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, FUNDING, "channel is not funding")
    assert msg.sender == p.a or msg.sender == p.b, "only a participant can deposit"
    dep_a: uint256 = (slot >> 8) & MASK96
    dep_b: uint256 = (slot >> 104) & MASK96
    if msg.sender == p.a:
        dep_a += msg.value
    else:
        dep_b += msg.value
    assert msg.value > 0, "deposit must be a positive amount up to what is still due"
    assert dep_a <= convert(p.deposit_a, uint256) and dep_b <= convert(
        p.deposit_b, uint256
    ), "deposit must be a positive amount up to what is still due"
    phase: uint256 = FUNDING
    if dep_a == convert(p.deposit_a, uint256) and dep_b == convert(p.deposit_b, uint256):
        phase = OPEN
    self.channels[key] = phase | (dep_a << 8) | (dep_b << 104)
    log Deposited(channel_id=p.channel_id, key=key)


@external
@nonreentrant
def cancel(p: Params):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, FUNDING, "only a channel still funding is cancelled")
    assert msg.sender == p.a or msg.sender == p.b, "only a participant can cancel"
    self.channels[key] = CANCELLED
    log Cancelled(channel_id=p.channel_id, key=key)
    self._send(p.a, (slot >> 8) & MASK96)
    self._send(p.b, (slot >> 104) & MASK96)


@external
@nonreentrant
def cooperative_close(p: Params, u: State, sa: Sig, sb: Sig):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    phase: uint256 = slot & 255
    if phase != CLOSING:
        self._require_phase(slot, OPEN, "channel is not open")
    assert u.final, "a cooperative close needs a final update"
    self._check_update(p, u, sa, sb)
    if phase == CLOSING:
        assert u.seq > convert((slot >> 8) & MASK64, uint64), "seq is not newer than the registered seq"
    self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))


@external
@nonreentrant
def unilateral_close(p: Params, u: State, sa: Sig, sb: Sig):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, OPEN, "channel is not open")
    self._check_update(p, u, sa, sb)
    if u.final:  # a doubly-signed final update closes at once
        self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))
        return
    deadline: uint256 = block.timestamp + convert(p.window, uint256)
    assert deadline <= MASK64, "the window is too long"
    self.channels[key] = (
        CLOSING | (convert(u.seq, uint256) << 8) | (deadline << 72) | (convert(u.out_a, uint256) << 136)
    )
    log ClosingStarted(channel_id=p.channel_id, key=key, seq=u.seq, deadline=convert(deadline, uint64))


@external
@nonreentrant
def refute(p: Params, u: State, sa: Sig, sb: Sig):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, CLOSING, "channel is not closing")
    deadline: uint256 = (slot >> 72) & MASK64
    assert block.timestamp < deadline, "the window has ended"
    self._check_update(p, u, sa, sb)
    assert u.seq > convert((slot >> 8) & MASK64, uint64), "seq is not newer than the registered seq"
    if u.final:
        self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))
        return
    # the window is not reset, so closing cannot be stalled forever
    self.channels[key] = (
        CLOSING | (convert(u.seq, uint256) << 8) | (deadline << 72) | (convert(u.out_a, uint256) << 136)
    )
    log Refuted(channel_id=p.channel_id, key=key, seq=u.seq, deadline=convert(deadline, uint64))


@external
@nonreentrant
def settle(p: Params):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, CLOSING, "channel is not closing")
    assert block.timestamp >= (slot >> 72) & MASK64, "the window is still open"
    out_a: uint256 = (slot >> 136) & MASK96
    total: uint256 = convert(p.deposit_a, uint256) + convert(p.deposit_b, uint256)
    self._pay(key, p, out_a, total - out_a)


@external
@nonreentrant
def withdraw():
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "nothing is owed"
    self.owed[msg.sender] = 0
    raw_call(msg.sender, b"", value=amount)
