"""The signed log and its verifier: every link, signature and replayed state is checked."""

import dataclasses

import pytest
from conftest import make_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from bfs_smr import (
    ChannelParams,
    CommandEntry,
    LocalError,
    LogVerificationError,
    SignedUpdate,
    Update,
    decode,
    encode,
    hash_bytes,
    verify_log,
)


@pytest.fixture
def run():
    chain, pair = make_pair("payments", (100, 50))
    pair.open()
    for amount in (5, 7, 11):
        pair.alice.chan.issue({"pay": amount})
    pair.bob.chan.issue({"pay": 3})
    pair.pump()
    return chain, pair


def resign(pair, update):
    """Both parties sign ``update`` (to test checks beyond signatures)."""
    digest = pair.alice.l1.format.digest(update, update.body())
    return SignedUpdate(update, (pair.alice.signer.sign(digest), pair.bob.signer.sign(digest)))


def test_both_logs_verify_and_replay_to_the_same_state(run):
    _, pair = run
    for party in pair.parties:
        state = verify_log(pair.params, pair.app, party.l1.format, party.log)
        assert state == (100 - 23 + 3, 50 + 23 - 3)
    assert pair.alice.log == pair.bob.log
    assert [u.seq for u in pair.alice.log] == list(range(5))


def test_gap_is_detected(run):
    _, pair = run
    log = pair.alice.log[:2] + pair.alice.log[3:]
    with pytest.raises(LogVerificationError, match="expected sequence 2") as info:
        verify_log(pair.params, pair.app, pair.alice.l1.format, log)
    assert info.value.seq == 3


def test_bad_signature_is_detected(run):
    _, pair = run
    log = list(pair.alice.log)
    s = log[2]
    log[2] = SignedUpdate(s.update, (s.signatures[0], s.signatures[0]))
    with pytest.raises(LogVerificationError, match="signature"):
        verify_log(pair.params, pair.app, pair.alice.l1.format, log)


def test_missing_signature_is_detected(run):
    _, pair = run
    log = list(pair.alice.log)
    log[1] = SignedUpdate(log[1].update, (log[1].signatures[0], None))
    with pytest.raises(LogVerificationError, match="signature"):
        verify_log(pair.params, pair.app, pair.alice.l1.format, log)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u: {"state_hash": hash_bytes(b"x")}, "state hash"),
        (lambda u: {"outcome": (u.outcome[0] - 1, u.outcome[1] + 1)}, "outcome"),
        (lambda u: {"prev_hash": hash_bytes(b"x")}, "previous-hash"),
        (lambda u: {"app_id": "payments/2"}, "another app"),
        (lambda u: {"channel_id": hash_bytes(b"other")}, "another channel"),
        (lambda u: {"commands": (CommandEntry(0, 99, {"pay": 10_000}),)}, "invalid transition"),
    ],
)
def test_doubly_signed_but_wrong_entries_are_detected(run, change, message):
    _, pair = run
    log = list(pair.alice.log)
    log[2] = resign(pair, dataclasses.replace(log[2].update, **change(log[2].update)))
    with pytest.raises(LogVerificationError, match=message):
        verify_log(pair.params, pair.app, pair.alice.l1.format, log)


def test_entry_after_final_is_detected(run):
    _, pair = run
    pair.close_cooperatively()
    log = list(pair.alice.log)
    last = log[-1].update
    extra = dataclasses.replace(last, seq=last.seq + 1, prev_hash=last.entry_hash(), final=False)
    with pytest.raises(LogVerificationError, match="after a final"):
        verify_log(pair.params, pair.app, pair.alice.l1.format, [*log, resign(pair, extra)])


def test_empty_log_is_refused(run):
    _, pair = run
    with pytest.raises(LogVerificationError, match="empty"):
        verify_log(pair.params, pair.app, pair.alice.l1.format, [])


def test_update_value_round_trip_and_shape_checks(run):
    _, pair = run
    signed = pair.alice.log[3]
    assert SignedUpdate.from_value(signed.to_value()) == signed
    bad = signed.update.to_value()
    bad[1] = -1
    with pytest.raises(ValueError, match="seq"):
        Update.from_value(bad)
    bad = signed.update.to_value()
    bad[4] = [[2, 1, {}]]
    with pytest.raises(ValueError, match="actor"):
        Update.from_value(bad)


def test_channel_id_depends_on_every_parameter(run):
    _, pair = run
    p = pair.params
    variants = [
        dataclasses.replace(p, nonce=p.nonce + 1),
        dataclasses.replace(p, l1=b"memory:other"),
        dataclasses.replace(p, deposits=(p.deposits[0], p.deposits[1] + 1)),
        dataclasses.replace(p, app_version=2),
        dataclasses.replace(p, challenge_window=p.challenge_window + 1),
        dataclasses.replace(p, participants=(p.participants[1], p.participants[0])),
    ]
    ids = {v.channel_id for v in variants} | {p.channel_id}
    assert len(ids) == len(variants) + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"participants": (b"a" * 32, b"a" * 32)},
        {"deposits": (-1, 0)},
        {"challenge_window": 0},
        {"nonce": -1},
        # (found by the tower_entry fuzz target: an entry whose options were an integer
        # made parameters whose id could not be taken, and the reader died with TypeError)
        {"options": 5},
        {"options": [1]},
        {"l1": "memory:x"},
        {"participants": ("a" * 32, b"b" * 32)},
        {"app": 7},
    ],
)
def test_params_are_validated(kwargs):
    base = {
        "l1": b"memory:x",
        "participants": (b"a" * 32, b"b" * 32),
        "deposits": (1, 0),
        "app": "payments",
        "app_version": 1,
    }
    with pytest.raises(LocalError):
        ChannelParams(**{**base, **kwargs})


@pytest.mark.parametrize(
    "deposits, nonce, window",
    [((2**64, 0), 0, 60), ((2**63, 2**63), 0, 60), ((1, 1), 2**64, 60), ((1, 1), 0, 2**64)],
)
def test_amounts_beyond_the_codecs_integers_are_refused_when_parameters_are_made(
    deposits, nonce, window
):
    """A channel whose total, nonce or window the codec cannot hold as an integer would
    open on L1 and then never be read back (found by the L1 kit on the local L1, whose
    file then failed on every read with the funds locked): it is refused up front."""
    with pytest.raises(LocalError, match="at most 2\\*\\*64 - 1"):
        ChannelParams(
            l1=b"l1",
            participants=(b"a" * 32, b"b" * 32),
            deposits=deposits,
            app="payments",
            app_version=1,
            nonce=nonce,
            challenge_window=window,
        )
    edge = ChannelParams(
        l1=b"l1",
        participants=(b"a" * 32, b"b" * 32),
        deposits=(2**64 - 2, 1),
        app="payments",
        app_version=1,
    )
    assert ChannelParams.from_value(decode(encode(edge.to_value()))) == edge


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1, 2**64)
    | st.binary(max_size=40)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)
_GOOD = [b"memory:x", [b"a" * 32, b"b" * 32], [1, 0], "payments", 1, {}, 0, 60, b"w" * 32]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 8), _ANY, st.booleans())
def test_parameters_read_from_plain_data_are_refused_or_whole(position, replacement, watched):
    """Whatever plain data ``from_value`` accepts has an id and round-trips: a peer's or
    a tower entry's parameters are either refused up front or usable, never a crash later.
    One field of good parameters at a time is replaced by arbitrary plain data."""
    value = list(_GOOD if watched else _GOOD[:8])
    if position < len(value):
        value[position] = replacement
    try:
        params = ChannelParams.from_value(value)
    except (ValueError, TypeError, LookupError, LocalError):
        return
    assert ChannelParams.from_value(params.to_value()).channel_id == params.channel_id
