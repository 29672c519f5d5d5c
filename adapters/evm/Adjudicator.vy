#pragma version 0.4.3
#pragma evm-version cancun
"""
@title bfs-smr adjudicator
@notice Holds the deposits of two-party channels and pays out the newest doubly-signed
        outcome it is shown (docs/design.md §5), and lets the party to move in a game force
        its move through the app's rules contract. One storage slot per channel.
@dev    A channel lives under key = keccak256(abi_encode(channel_id, a, b, deposit_a,
        deposit_b, window, rules, watch)), so the parameters that matter on chain, the app's
        rules contract and the commitment to the watch secret among them, are bound by the
        key and nobody can occupy a channel id with other parameters or swap the rules of an
        open channel. Its slot packs:
          bits 0..7     phase (0 none, 1 funding, 2 open, 3 closing, 4 settled,
                        5 cancelled, 6 forced)
          funding/open: bits 8..103 deposited by a, bits 104..199 deposited by b
          closing:      bits 8..71 registered seq, bits 72..135 deadline,
                        bits 136..231 registered payout to a (b gets the rest)
          forced:       bits 8..255 the low 248 bits of keccak256(abi_encode(Forced)): the
                        registered forced move, whose fields each later call repeats
          settled:      bits 8..103 paid to a, bits 104..199 paid to b
        Signatures are over keccak256(0x19 0x00 self abi_encode(chain.id, channel_id, seq,
        out_a, out_b, final, binding)) (EIP-191 version 0), where binding =
        keccak256(state_hash ‖ entry_hash): state_hash is the keccak256 of the state's ABI
        encoding (what the rules contract reads), entry_hash the BLAKE2b-256 hash of the
        update's canonical CBOR body. The contract rebuilds the body of a forced update and
        hashes it with the BLAKE2b compression precompile (EIP-152).
"""

struct Params:
    channel_id: bytes32
    a: address
    b: address
    deposit_a: uint96
    deposit_b: uint96
    window: uint64
    rules: address  # the app's rules contract; empty: moves cannot be forced
    # keccak256 of the channel's watch secret, which a unilateral close must reveal (and
    # its event publishes); empty: the channel commits to no secret
    watch: bytes32

struct State:
    seq: uint64
    out_a: uint96
    out_b: uint96
    final: bool
    binding: bytes32  # keccak256(state_hash ‖ entry_hash)

struct Base:  # a registered doubly-signed update, with both halves of its binding
    seq: uint64
    out_a: uint96
    out_b: uint96
    state_hash: bytes32
    entry_hash: bytes32

struct Sig:
    v: uint8
    r: bytes32
    s: bytes32

struct Move:
    state: Bytes[MAX_STATE]  # the registered state, ABI-encoded as the rules read it
    ref: uint64  # the mover's reference for the command
    command: Bytes[MAX_COMMAND]  # the command's canonical CBOR
    sig: Sig  # the mover's signature of the update the move makes

struct Forced:
    seq: uint64
    deadline: uint64
    out_a: uint96
    state_hash: bytes32
    entry_hash: bytes32

interface Rules:
    def app_id() -> String[MAX_APP_ID]: view

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
    reveal: bytes32  # the watch secret; empty for a channel that commits to none

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

event ForceMoved:
    channel_id: indexed(bytes32)
    key: bytes32
    seq: uint64
    out_a: uint96
    state_hash: bytes32
    prev_hash: bytes32
    mover: uint8
    ref: uint64
    command: Bytes[MAX_COMMAND]
    v: uint8
    r: bytes32
    s: bytes32

NO_CHANNEL: constant(uint256) = 0
FUNDING: constant(uint256) = 1
OPEN: constant(uint256) = 2
CLOSING: constant(uint256) = 3
SETTLED: constant(uint256) = 4
CANCELLED: constant(uint256) = 5
FORCED: constant(uint256) = 6

# Bounds on what a force move carries (calldata; memory is allocated to these sizes).
MAX_STATE: constant(uint256) = 512  # 16 words
MAX_COMMAND: constant(uint256) = 128
MAX_APP_ID: constant(uint256) = 64
# a forced update's body: 1 + 34 + 9 + 34 + 2 + 64 + 2 + 1 + 9 + 128 + 34 + 1 + 9 + 9 + 1 = 338
MAX_BODY: constant(uint256) = 384
MAX_BLOCKS: constant(uint256) = 3  # 128-byte BLAKE2b blocks of the longest body hashed
# A window this long (136 years) keeps every deadline far inside 64 bits.
MAX_WINDOW: constant(uint64) = 4294967295
MASK248: constant(uint256) = (1 << 248) - 1
BLAKE2F: constant(address) = 0x0000000000000000000000000000000000000009
# BLAKE2b-256's initial chaining value (IV, first word xored with 0x01010020), as the
# precompile reads it: eight little-endian 64-bit words.
B2_H0: constant(bytes32) = 0x28c9bdf267e6096a3ba7ca8485ae67bb2bf894fe72f36e3cf1361d5f3af54fa5
B2_H1: constant(bytes32) = 0xd182e6ad7f520e511f6c3e2b8c68059b6bbd41fbabd9831f79217e1319cde05b

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
    return keccak256(
        abi_encode(p.channel_id, p.a, p.b, p.deposit_a, p.deposit_b, p.window, p.rules, p.watch)
    )


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
            abi_encode(chain.id, channel_id, u.seq, u.out_a, u.out_b, u.final, u.binding),
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


@pure
@internal
def _commit(f: Forced) -> uint256:
    return FORCED | (convert(keccak256(abi_encode(f)), uint256) << 8)


@pure
@internal
def _check_forced(slot: uint256, f: Forced):
    """The caller repeats the registered forced move's fields: check them against the
    slot's commitment."""
    assert slot == self._commit(f), "these are not the registered forced move's fields"


@payable
@external
def open(p: Params):
    assert msg.sender == p.a or msg.sender == p.b, "only a participant can open the channel"
    assert p.a != p.b, "a channel has two distinct participants"
    # nobody can sign as the zero address: such a channel could never close
    assert p.a != empty(address) and p.b != empty(address), "a participant is the zero address"
    assert p.window > 0, "the window must be positive"
    # every deadline (now + window) then fits the 64 bits the slot keeps it in
    assert p.window <= MAX_WINDOW, "the window is too long"
    assert p.deposit_a != 0 or p.deposit_b != 0, "a channel must lock some value"
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


# No function but withdraw takes a re-entrancy lock: each changes the slot before it sends
# anything, sends only the 2,300-gas stipend (too little to change any state), and calls the
# rules contract only with STATICCALL.


@external
def cancel(p: Params):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, FUNDING, "only a channel still funding is cancelled")
    assert msg.sender == p.a or msg.sender == p.b, "only a participant can cancel"
    self.channels[key] = CANCELLED
    log Cancelled(channel_id=p.channel_id, key=key)
    self._send(p.a, (slot >> 8) & MASK96)
    self._send(p.b, (slot >> 104) & MASK96)


# Anyone may send a close, a refute, a settle or a force move (a watchtower, a relayer):
# each acts only on updates the parties signed and pays only the participants. A unilateral
# close of a channel whose params commit to a watch secret also needs that secret, which
# only the parties know (until the close publishes it).


@external
def cooperative_close(p: Params, u: State, sa: Sig, sb: Sig, f: Forced = empty(Forced)):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    phase: uint256 = slot & 255
    if phase == OPEN:
        pass
    elif phase == FORCED:  # a doubly-signed update beats a move forced at its seq
        self._check_forced(slot, f)
        assert u.seq >= f.seq, "seq is not newer than the registered seq"
    elif phase == CLOSING:
        assert u.seq > convert((slot >> 8) & MASK64, uint64), "seq is not newer than the registered seq"
    else:
        self._require_phase(slot, OPEN, "channel is not open")
    assert u.final, "a cooperative close needs a final update"
    self._check_update(p, u, sa, sb)
    self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))


@external
def unilateral_close(p: Params, u: State, sa: Sig, sb: Sig, reveal: bytes32):
    """``reveal``: the channel's watch secret when ``p.watch`` commits to one (checked, and
    published in the event, so a watchtower can read what a party gave it now and not
    before); ignored otherwise."""
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, OPEN, "channel is not open")
    self._check_update(p, u, sa, sb)
    shown: bytes32 = empty(bytes32)
    if p.watch != empty(bytes32):
        assert keccak256(reveal) == p.watch, "a unilateral close must reveal the channel's watch secret"
        shown = reveal
    if u.final:  # a doubly-signed final update closes at once
        self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))
        return
    deadline: uint256 = block.timestamp + convert(p.window, uint256)
    self.channels[key] = (
        CLOSING | (convert(u.seq, uint256) << 8) | (deadline << 72) | (convert(u.out_a, uint256) << 136)
    )
    log ClosingStarted(
        channel_id=p.channel_id, key=key, seq=u.seq, deadline=convert(deadline, uint64), reveal=shown
    )


@external
def refute(p: Params, u: State, sa: Sig, sb: Sig, f: Forced = empty(Forced)):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    deadline: uint256 = 0
    newer: bool = False
    if slot & 255 == CLOSING:
        deadline = (slot >> 72) & MASK64
        newer = u.seq > convert((slot >> 8) & MASK64, uint64)
    elif slot & 255 == FORCED:  # a doubly-signed update beats a move forced at its seq
        self._check_forced(slot, f)
        deadline = convert(f.deadline, uint256)
        newer = u.seq >= f.seq
    else:
        self._require_phase(slot, CLOSING, "channel is not closing")
    assert block.timestamp < deadline, "the window has ended"
    self._check_update(p, u, sa, sb)
    assert newer, "seq is not newer than the registered seq"
    if u.final:
        self._pay(key, p, convert(u.out_a, uint256), convert(u.out_b, uint256))
        return
    # the window is not reset, so closing cannot be stalled forever
    self.channels[key] = (
        CLOSING | (convert(u.seq, uint256) << 8) | (deadline << 72) | (convert(u.out_a, uint256) << 136)
    )
    log Refuted(channel_id=p.channel_id, key=key, seq=u.seq, deadline=convert(deadline, uint64))


@external
def settle(p: Params, f: Forced = empty(Forced)):
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    out_a: uint256 = 0
    deadline: uint256 = 0
    if slot & 255 == FORCED:
        self._check_forced(slot, f)
        deadline = convert(f.deadline, uint256)
        out_a = convert(f.out_a, uint256)
    else:
        self._require_phase(slot, CLOSING, "channel is not closing")
        deadline = (slot >> 72) & MASK64
        out_a = (slot >> 136) & MASK96
    assert block.timestamp >= deadline, "the window is still open"
    total: uint256 = convert(p.deposit_a, uint256) + convert(p.deposit_b, uint256)
    self._pay(key, p, out_a, total - out_a)


@external
def force_move(p: Params, u: Base, sig: Sig, m: Move):
    """Force the next move on the doubly-signed update a unilateral close or a refute
    registered: ``u``, with ``sig``, the signature on it of the party *not* to move.

    That one signature identifies the registered update: the other party signed no other
    update at its seq (I1), and the mover's own signature binds the forced update to it
    (its body links to ``u.entry_hash``), so a mover cannot build on a base of its own.
    """
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._require_phase(slot, CLOSING, "channel is not closing")
    assert block.timestamp < (slot >> 72) & MASK64, "the window has ended"
    assert u.seq == convert((slot >> 8) & MASK64, uint64), "the base is not the registered update"
    mover: uint256 = self._force(p, key, convert(u.seq, uint256), u.entry_hash, u.state_hash, m)
    total: uint256 = convert(p.deposit_a, uint256) + convert(p.deposit_b, uint256)
    assert convert(u.out_a, uint256) + convert(u.out_b, uint256) == total, "the base is not the registered update"
    digest: bytes32 = self._digest(
        p.channel_id,
        State(
            seq=u.seq,
            out_a=u.out_a,
            out_b=u.out_b,
            final=False,
            binding=keccak256(concat(u.state_hash, u.entry_hash)),
        ),
    )
    other: address = p.b
    if mover == 1:
        other = p.a
    assert self._signer(digest, sig) == other, "the base is not the registered update"


@external
def force_next(p: Params, f: Forced, m: Move):
    """Force the next move on the forced move registered last (the answer to it)."""
    key: bytes32 = self._key(p)
    slot: uint256 = self.channels[key]
    self._check_forced(slot, f)
    assert block.timestamp < convert(f.deadline, uint256), "the window has ended"
    self._force(p, key, convert(f.seq, uint256), f.entry_hash, f.state_hash, m)


@internal
def _force(p: Params, key: bytes32, seq: uint256, prev_hash: bytes32, state_hash: bytes32, m: Move) -> uint256:
    """Register the move ``m`` forced on the update at ``seq`` (entry hash ``prev_hash``,
    state hash ``state_hash``); returns the mover."""
    assert p.rules != empty(address), "the app has no rules on chain; nothing to force"
    assert keccak256(m.state) == state_hash, "state is not the registered update's state"
    # The rules' force(state, command) -> (mover, next state, out_a, out_b): the party to
    # move plays the command; it reverts if nobody is to move or the rules refuse it.
    ok: bool = False
    data: Bytes[MAX_STATE + 160] = b""
    ok, data = raw_call(
        p.rules,
        abi_encode(m.state, m.command, method_id=method_id("force(bytes,bytes)")),
        max_outsize=MAX_STATE + 160,
        is_static_call=True,
        revert_on_failure=False,
    )
    assert ok, "illegal move: the rules refuse it, or nobody is to move"
    mover: uint256 = 0
    new_state: Bytes[MAX_STATE] = b""
    out_a: uint256 = 0
    out_b: uint256 = 0
    mover, new_state, out_a, out_b = abi_decode(data, (uint256, Bytes[MAX_STATE], uint256, uint256))
    assert mover < 2, "illegal move: the rules name no party to move"
    total: uint256 = convert(p.deposit_a, uint256) + convert(p.deposit_b, uint256)
    assert out_a <= total and out_b == total - out_a, "the rules' outcome does not pay out exactly the locked value"
    new_hash: bytes32 = keccak256(new_state)
    app_id: String[MAX_APP_ID] = staticcall Rules(p.rules).app_id()
    entry: bytes32 = self._blake2b(
        self._forced_body(p.channel_id, seq + 1, prev_hash, app_id, mover, m, new_hash, out_a, out_b)
    )
    digest: bytes32 = self._digest(
        p.channel_id,
        State(
            seq=convert(seq + 1, uint64),
            out_a=convert(out_a, uint96),
            out_b=convert(out_b, uint96),
            final=False,
            binding=keccak256(concat(new_hash, entry)),
        ),
    )
    signer: address = p.a
    if mover == 1:
        signer = p.b
    assert self._signer(digest, m.sig) == signer, "a force move must be signed by the party to move"
    deadline: uint256 = block.timestamp + convert(p.window, uint256)  # the other side gets a window
    f: Forced = Forced(
        seq=convert(seq + 1, uint64),
        deadline=convert(deadline, uint64),
        out_a=convert(out_a, uint96),
        state_hash=new_hash,
        entry_hash=entry,
    )
    self.channels[key] = self._commit(f)
    # the deadline is the block's time plus the window, and the entry hash that of the body
    # the event's fields make: a reader rebuilds both
    log ForceMoved(
        channel_id=p.channel_id,
        key=key,
        seq=f.seq,
        out_a=f.out_a,
        state_hash=new_hash,
        prev_hash=prev_hash,
        mover=convert(mover, uint8),
        ref=m.ref,
        command=m.command,
        v=m.sig.v,
        r=m.sig.r,
        s=m.sig.s,
    )
    return mover


@pure
@internal
def _cbor_uint(x: uint256) -> Bytes[9]:
    """The canonical CBOR head of the unsigned integer ``x`` (< 2**64)."""
    word: bytes32 = convert(x, bytes32)
    if x < 24:
        return slice(word, 31, 1)
    if x < 256:
        return concat(x"18", slice(word, 31, 1))
    if x < 65536:
        return concat(x"19", slice(word, 30, 2))
    if x < 4294967296:
        return concat(x"1a", slice(word, 28, 4))
    return concat(x"1b", slice(word, 24, 8))


@pure
@internal
def _forced_body(
    channel_id: bytes32,
    seq: uint256,
    prev_hash: bytes32,
    app_id: String[MAX_APP_ID],
    mover: uint256,
    m: Move,
    state_hash: bytes32,
    out_a: uint256,
    out_b: uint256,
) -> Bytes[MAX_BODY]:
    """The canonical CBOR body of the update a force move makes: [channel_id, seq,
    prev_hash, app_id, [[mover, ref, command]], state_hash, [out_a, out_b], false]."""
    n: uint256 = len(app_id)
    text: Bytes[2] = b""
    if n < 24:
        text = slice(convert(96 + n, bytes32), 31, 1)
    else:
        text = concat(x"78", slice(convert(n, bytes32), 31, 1))
    return concat(
        x"885820",
        channel_id,
        self._cbor_uint(seq),
        x"5820",
        prev_hash,
        text,
        convert(app_id, Bytes[MAX_APP_ID]),
        x"8183",
        slice(convert(mover, bytes32), 31, 1),
        self._cbor_uint(convert(m.ref, uint256)),
        m.command,
        x"5820",
        state_hash,
        x"82",
        self._cbor_uint(out_a),
        self._cbor_uint(out_b),
        x"f4",
    )


@pure
@internal
def _le64(x: uint256) -> Bytes[8]:
    """``x`` (< 2**16: a body's length) as 8 little-endian bytes."""
    return slice(convert(((x & 255) << 248) | ((x >> 8) << 240), bytes32), 0, 8)


@view
@internal
def _blake2b(data: Bytes[MAX_BODY]) -> bytes32:
    """BLAKE2b-256 of ``data`` (unkeyed), through the EIP-152 compression precompile."""
    n: uint256 = len(data)
    padded: Bytes[MAX_BODY + 128] = concat(data, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32))
    blocks: uint256 = max((n + 127) // 128, 1)
    h: Bytes[64] = concat(B2_H0, B2_H1)
    for i: uint256 in range(MAX_BLOCKS):
        if i == blocks:
            break
        last: bool = i + 1 == blocks
        counted: uint256 = (i + 1) * 128
        flag: Bytes[1] = x"00"
        if last:
            counted = n
            flag = x"01"
        h = raw_call(
            BLAKE2F,
            concat(x"0000000c", h, slice(padded, i * 128, 128), self._le64(counted), x"0000000000000000", flag),
            max_outsize=64,
            is_static_call=True,
        )
    return extract32(h, 0)


@view
@external
def blake2b256(data: Bytes[MAX_BODY]) -> bytes32:
    """BLAKE2b-256 of ``data``: the hash the framework chains updates with."""
    return self._blake2b(data)


@external
@nonreentrant
def withdraw():
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "nothing is owed"
    self.owed[msg.sender] = 0
    raw_call(msg.sender, b"", value=amount)
