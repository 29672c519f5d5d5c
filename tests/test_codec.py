import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfs_smr import CodecError, decode, encode, hash_bytes

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(plain)
def test_round_trip_and_canonical(value):
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


def test_map_keys_are_sorted_whatever_the_insertion_order():
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})


def test_tuples_encode_like_lists():
    assert encode((1, (2, 3))) == encode([1, [2, 3]])


@pytest.mark.parametrize(
    "data, why",
    [
        (bytes.fromhex("0102"), "trailing bytes"),
        (bytes.fromhex("1801"), "non-shortest integer"),
        (cbor2.dumps(1.5), "float"),
        (cbor2.dumps({"b": 1, "a": 2}), "unsorted map"),
        (bytes.fromhex("9f01ff"), "indefinite array"),
        (bytes.fromhex("c11a5f5e1000"), "tag"),
        (b"\xff", "garbage"),
        (b"", "empty"),
    ],
)
def test_decode_refuses_non_canonical_and_foreign_input(data, why):
    with pytest.raises(CodecError):
        decode(data)


def test_decode_bounds_size():
    data = encode(b"x" * 100)
    with pytest.raises(CodecError, match="over the limit"):
        decode(data, max_size=50)
    assert decode(data, max_size=200) == b"x" * 100


def test_decode_bounds_nesting():
    deep = b"\x81" * 100 + b"\x00"
    with pytest.raises(CodecError, match="nested"):
        decode(deep)


def test_encode_refuses_unencodable():
    with pytest.raises(CodecError):
        encode(object())


def test_hash_is_blake2b_256():
    import hashlib

    assert hash_bytes(b"abc") == hashlib.blake2b(b"abc", digest_size=32).digest()
    assert len(hash_bytes(b"")) == 32


@given(st.integers(0, 2**64 - 1))
def test_item_head_is_the_canonical_head(n):
    from bfs_smr._codec import item_head

    assert item_head(0, n) == encode(n)
    assert item_head(2, n % 70_000) + b"x" * (n % 70_000) == encode(b"x" * (n % 70_000))


@given(st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=3))
def test_signatures_encode_as_the_encoder_would(sigs):
    from bfs_smr._codec import encode_signatures

    assert encode_signatures(tuple(sigs)) == encode(sigs)


# -- the hardened decoder (issue 11): anything encode would not write is refused ---------

from bfs_smr._codec import MAX_DEPTH, check_plain  # noqa: E402
from tests.hostile import shared_reference_bomb  # noqa: E402


def test_shared_references_are_refused():
    bomb = shared_reference_bomb(40)  # under 400 bytes, 2**40 paths as a tree
    assert len(bomb) < 400
    shared = cbor2.loads(bomb)
    assert shared[-1][0] is shared[-1][1]  # what cbor2 makes of it: a DAG
    with pytest.raises(CodecError, match="a tag"):
        decode(bomb)


def test_keys_sharing_a_python_hash_are_refused():
    # Integers equal modulo 2**61 - 1 hash alike; beyond 64 bits they need a bignum tag.
    modulus = (1 << 61) - 1
    keys = [i * modulus for i in range(1, 50)]
    assert len({hash(k) for k in keys}) == 1
    with pytest.raises(CodecError):
        decode(cbor2.dumps(dict.fromkeys(keys, 0)))
    # Within 64 bits at most a handful of integers share a hash.
    assert len([k for k in keys if k < 1 << 64]) <= 8


@pytest.mark.parametrize(
    "data, why",
    [
        (bytes.fromhex("a2616101616102"), "duplicate key"),
        (bytes.fromhex("a2616201616101"), "keys out of order"),
        (bytes.fromhex("a2626161016162"[:-2] + "02"), "keys by length first"),
        (bytes.fromhex("a1f601"), "null as a key"),
        (bytes.fromhex("a14100f6"), "bytes as a key"),
        (bytes.fromhex("a1810000"), "array as a key"),
        (bytes.fromhex("5f41ff"), "indefinite bytes"),
        (bytes.fromhex("bf0000ff"), "indefinite map"),
        (bytes.fromhex("f7"), "undefined"),
        (bytes.fromhex("f820"), "simple value"),
        (bytes.fromhex("f93c00"), "half float"),
        (bytes.fromhex("1c"), "reserved head"),
        (bytes.fromhex("190001"), "two-byte head for 1"),
        (bytes.fromhex("1a0000ffff"), "four-byte head for a two-byte value"),
        (bytes.fromhex("3800"), "one-byte head for -1"),
        (bytes.fromhex("6180"), "text that is not UTF-8"),
        (bytes.fromhex("62eda080"), "a surrogate in text"),
        (bytes.fromhex("c249010000000000000000"), "a bignum"),
        (bytes.fromhex("d81c820000"), "shareable"),
        (bytes.fromhex("9bffffffffffffffff"), "an array longer than the input"),
        (bytes.fromhex("5a7fffffff"), "bytes longer than the input"),
        (bytes.fromhex("82"), "truncated array"),
    ],
)
def test_decode_refuses_what_encode_never_writes(data, why):
    with pytest.raises(CodecError):
        decode(data)


def test_mixed_keys_in_canonical_order_decode():
    value = {10: 1, -1: 2, "a": 3, "z": 4, 1000: 5, "bb": 6}
    assert decode(encode(value)) == value


def test_decode_bounds_items():
    data = encode([[0]] * 100)
    # each container counts itself and its members: 101 + 100 * 2
    assert decode(data, max_items=301) == [[0]] * 100
    with pytest.raises(CodecError, match="too many items"):
        decode(data, max_items=300)


def test_decode_depth_leaves_room_for_a_command_in_a_message():
    command = [0]
    for _ in range(MAX_DEPTH - 1):
        command = [command]
    check_plain(command)  # as deep as a command may be
    message = [[[[[[[command]]]]]]]  # wrapped as deep as a resync message wraps it
    assert decode(encode(message)) == message
    with pytest.raises(CodecError, match="nested"):
        check_plain([command])


def test_check_plain_refuses_shared_structure_quickly():
    value: list = [0, 0]
    for _ in range(60):
        value = [value, value]  # 2**60 leaves as a tree
    with pytest.raises(CodecError):
        check_plain(value)
    dag: list = [0]
    for _ in range(25):
        dag = [dag] * 40  # shallow enough, but the walk is bounded by items
    with pytest.raises(CodecError, match="too many items"):
        check_plain(dag)


def test_check_plain_counts_items_as_decode_does():
    value = {"pay": 1, "memo": ["a", {"b": [1, 2]}]}
    data = encode(value)
    used = check_plain(value)
    decode(data, max_items=used)
    with pytest.raises(CodecError, match="too many items"):
        decode(data, max_items=used - 1)


@pytest.mark.parametrize("n", [2**64, -(2**64) - 1, 2**80])
def test_check_plain_refuses_integers_that_need_a_bignum(n):
    with pytest.raises(CodecError, match="64-bit"):
        check_plain({"pay": n})
    check_plain({"pay": 2**64 - 1, "x": -(2**64)})
    # as a map key and as a list member too, where the walk checks integers inline
    with pytest.raises(CodecError, match="64-bit"):
        check_plain({n: 1})
    with pytest.raises(CodecError, match="64-bit"):
        check_plain([1, "a", n])
    check_plain({2**64 - 1: [-(2**64), 0]})


@given(plain)
def test_check_plain_accepts_what_the_encoder_writes_and_counts_it(value):
    used = check_plain(value)
    assert decode(encode(value), max_items=used) == value


@given(st.binary(max_size=64))
def test_any_bytes_decode_to_their_own_encoding_or_are_refused(data):
    try:
        value = decode(data)
    except CodecError:
        return
    assert encode(value) == data


@given(plain)
def test_canonical_bytes_with_one_byte_changed_are_refused_or_canonical(value):
    data = bytearray(encode(value))
    for i in range(len(data)):
        mutated = bytes(data[:i]) + bytes([data[i] ^ 0x20]) + bytes(data[i + 1 :])
        try:
            back = decode(mutated)
        except CodecError:
            continue
        assert encode(back) == mutated


# The compiled build encodes with the codec's own writer, the pure one with cbor2
# (bfs_smr/_codec.py): both must write the same bytes, whichever build runs these tests.
from bfs_smr._codec import _encode_with_cbor2, _encode_written  # noqa: E402

keyed = st.recursive(
    plain,
    lambda children: st.dictionaries(
        st.integers(-(2**64), 2**64 - 1) | st.text(max_size=30), children, max_size=6
    ),
    max_leaves=30,
)


@given(keyed)
def test_the_codecs_writer_writes_what_cbor2_writes(value):
    assert _encode_written(value) == _encode_with_cbor2(value)


@pytest.mark.parametrize(
    "value",
    [
        2**64,  # a bignum: cbor2 writes a tag, which decode refuses
        -(2**64) - 1,
        (1, 2),  # a tuple, as an array
        {(1,): 2},
        1.5,
        True,
        {True: 1},
        b"x" * 24,
        "é" * 30,
        {"b": 1, "a": 2, 1: 3, -1: 4, "aa": 5, 1000: 6, "": 7},
        [[[]]] * 3,
    ],
)
def test_the_writer_hands_cbor2_what_it_does_not_write_itself(value):
    assert _encode_written(value) == _encode_with_cbor2(value)


@pytest.mark.parametrize("value", [{"x": object()}, "\ud800", [1, {"a": [object()]}]])
def test_the_writer_refuses_what_cbor2_refuses(value):
    with pytest.raises(CodecError):
        _encode_written(value)
    with pytest.raises(CodecError):
        _encode_with_cbor2(value)


def _outcome(encoder, value):  # type: ignore[no-untyped-def]
    try:
        return encoder(value)
    except (CodecError, RecursionError) as exc:
        return type(exc)


def test_a_cyclic_or_too_deep_value_ends_as_with_cbor2_not_a_crash():
    """The writer stops at a fixed depth and hands the value to cbor2, which does what it
    always did (refuses a cycle; a very deep value fails or encodes, as the stack allows);
    compiled, a runaway recursion in the writer would crash the process instead."""
    cyclic: list = []
    cyclic.append(cyclic)
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    for value in (cyclic, deep):
        assert _outcome(_encode_written, value) == _outcome(_encode_with_cbor2, value)
    assert _outcome(_encode_written, cyclic) in (CodecError, RecursionError)
