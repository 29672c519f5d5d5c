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
