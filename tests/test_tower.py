"""The watchtower's properties, each as a test that can fail (docs/watchtower.md):

- an entry is the same size at every seq, and so is the tower's row for it;
- before a unilateral close the tower can read nothing (no value on L1 opens an entry,
  and nothing of the channel is in the tower's bytes); the close's event opens it;
- only the node that filed an entry replaces it, and never with an older seq;
- hostile frames are refused (bounded, fuzzed, logged and counted), and a link that keeps
  sending them is dropped;
- garbage filed under a channel's locator cannot stop the tower from refuting with the
  newest real update, and the tower does nothing a party's node would not do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.local import LocalL1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfs_smr import L1ChannelStatus, L1Error, L1EventKind, SignedUpdate
from bfs_smr._codec import encode
from bfs_smr._crypto import Ed25519, Signer
from bfs_smr.runtime import transport
from bfs_smr.runtime._local import LocalPair
from bfs_smr.runtime.tower import (
    SLOT_SIZE,
    Tower,
    TowerConfig,
    TowerDir,
    TowerStore,
    entry_size,
    locator,
    seal,
    unseal,
)
from bfs_smr.runtime.tower._protocol import (
    MAX_QUERY,
    Ack,
    Put,
    Query,
    Refused,
    Seqs,
    TowerProtocolError,
    Welcome,
    parse_from_node,
    parse_from_tower,
)
from bfs_smr.runtime.tower._tower import MAX_REFUSALS

WINDOW = 3


def _pair(
    path: Path, *, watch: bytes, payments: int
) -> tuple[LocalL1, LocalPair, list[SignedUpdate]]:
    """A payments channel on a local L1 file, committed to ``watch``, opened, with
    ``payments`` updates after the opening one; returns every doubly-signed update."""
    chain = LocalL1.create(path / "l1.sqlite3", window=WINDOW)
    alice, bob = LocalPair.new_signers(chain.format.scheme)
    chain.mint(alice.public_key, 1_000)
    pair = LocalPair(
        _payments(),
        alice=alice,
        bob=bob,
        alice_l1=chain.adapter(alice.public_key),
        bob_l1=chain.adapter(bob.public_key),
        deposits=(1_000, 0),
        challenge_window=WINDOW,
        watch=watch,
    )
    pair.open()
    for _ in range(payments):
        pair.alice.chan.issue({"pay": 1})
        pair.pump()
    log = list(pair.bob.log)
    assert log[-1].seq == payments
    return chain, pair, log


def _payments() -> Any:
    from bfs_smr.plugins import load_app

    return load_app("payments")


# -- size ---------------------------------------------------------------------------------


def test_an_entry_and_its_row_have_the_same_size_at_every_seq(tmp_path: Path) -> None:
    watch = os.urandom(32)
    _, pair, log = _pair(tmp_path, watch=watch, payments=10)
    params = pair.params
    tenth = log[10]
    # The update at seq 100,000, signed by both parties as the channel would have it.
    later = dataclasses.replace(tenth.update, seq=100_000, outcome=(900, 100))
    signers = (pair.alice.signer, pair.bob.signer)
    digest = pair.alice.chan.format.digest(later, later.body())
    latest = SignedUpdate(later, (signers[0].sign(digest), signers[1].sign(digest)))
    assert latest.verify(params, pair.alice.chan.format)

    store = TowerStore(tmp_path / "tower", create=True) if _mkdir(tmp_path / "tower") else None
    assert store is not None
    client, loc = os.urandom(32), locator(watch)
    first = seal(watch, params, tenth)
    assert first is not None and len(first) == entry_size(SLOT_SIZE)
    store.put_many([(client, loc, 10, first)])
    at_ten = store.row_bytes(client, loc), _pages(store)
    for seq in range(11, 100_000, 997):  # the node coalesces: most updates never reach it
        entry = seal(watch, params, tenth)
        assert entry is not None
        store.put_many([(client, loc, seq, entry)])
    newest = seal(watch, params, latest)
    assert newest is not None and len(newest) == len(first)
    store.put_many([(client, loc, 100_000, newest)])
    assert store.seq_of(client, loc) == 100_000
    assert (store.row_bytes(client, loc), _pages(store)) == at_ten
    assert unseal(watch, 100_000, store.entries_at(loc)[0][2])[1] == latest


def _mkdir(path: Path) -> bool:
    path.mkdir()
    return True


def _pages(store: TowerStore) -> int:
    db = sqlite3.connect(store.path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(db.execute("PRAGMA page_count").fetchone()[0])
    finally:
        db.close()


def test_an_update_larger_than_the_slot_is_not_sealed(tmp_path: Path) -> None:
    watch = os.urandom(32)
    _, pair, log = _pair(tmp_path, watch=watch, payments=1)
    assert seal(watch, pair.params, log[-1], slot=256) is None
    assert seal(watch, pair.params, log[-1], slot=SLOT_SIZE) is not None


# -- blindness ---------------------------------------------------------------------------


def _values_on_l1(chain: LocalL1, pair: LocalPair) -> set[bytes]:
    """Every byte string an observer of the L1 can know before a close, and hashes of the
    channel's public fields: none may open an entry."""
    params = pair.params
    cid = params.channel_id
    view = chain.channel(cid)
    known = {
        cid,
        params.watch,
        params.l1,
        *params.participants,
        params.genesis_hash,
        encode(params.to_value()),
        dataclasses.replace(params, watch=b"").channel_id,
    }
    for event in chain.events():
        known.add(event.channel_id)
        assert event.reveal is None
    assert view.status is L1ChannelStatus.OPEN
    return known


def test_the_tower_reads_nothing_before_the_close_and_everything_after(tmp_path: Path) -> None:
    watch = os.urandom(32)
    chain, pair, log = _pair(tmp_path, watch=watch, payments=5)
    newest = log[-1]
    entry = seal(watch, pair.params, newest)
    assert entry is not None
    loc = locator(watch)
    _mkdir(tmp_path / "tower")
    store = TowerStore(tmp_path / "tower", create=True)
    store.put_many([(os.urandom(32), loc, newest.seq, entry)])
    store.close()

    for value in _values_on_l1(chain, pair):
        for key in (value, value[:32].ljust(32, b"\0")):
            with pytest.raises(ValueError, match="does not decrypt"):
                unseal(key, newest.seq, entry)
        assert locator(value) != loc
    # Nothing of the channel is in what the tower keeps.
    kept = b"".join(p.read_bytes() for p in (tmp_path / "tower").iterdir())
    for secret_part in (
        newest.update.body(),
        newest.update.state_hash,
        newest.update.entry_hash(),
        pair.params.channel_id,
        pair.params.participants[0],
        pair.params.participants[1],
        encode(list(newest.update.outcome)),
        *(s for s in newest.signatures if s is not None),
    ):
        assert secret_part not in kept

    # The stale close reveals the secret: now the entry opens, to the newest update.
    pair.alice.l1.unilateral_close(log[1], watch)
    reveals = [e.reveal for e in chain.events() if e.kind is L1EventKind.CLOSING_STARTED]
    assert reveals == [watch]
    params, update = unseal(reveals[0], newest.seq, entry)
    assert params == pair.params and update == newest


def test_a_close_without_the_secret_is_refused(tmp_path: Path) -> None:
    watch = os.urandom(32)
    chain, pair, log = _pair(tmp_path, watch=watch, payments=2)
    for wrong in (None, os.urandom(32), watch[:31]):
        with pytest.raises(L1Error, match="must reveal the channel's watch secret"):
            pair.alice.l1.unilateral_close(log[1], wrong)
    assert chain.channel(pair.params.channel_id).status is L1ChannelStatus.OPEN


# -- a live tower ------------------------------------------------------------------------


@asynccontextmanager
async def _tower(tmp_path: Path, l1: str, **options: Any) -> AsyncIterator[Tower]:
    TowerDir(tmp_path / "tower").init()
    tower = Tower(
        tmp_path / "tower",
        TowerConfig(listen="127.0.0.1:0", l1=l1, poll_interval=0.05, **options),
    )
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(tower.run(lambda _t: started.set_result(None)))
    await asyncio.wait_for(asyncio.shield(started), 20)
    try:
        yield tower
    finally:
        tower.stop()
        await asyncio.wait_for(task, 20)


class _Client:
    """A node's end of a tower link, speaking the protocol frame by frame."""

    def __init__(self, link: transport.Link) -> None:
        self.link = link
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        link.set_receiver(lambda _l, frames: [self.replies.put_nowait(f) for f in frames])

    @classmethod
    async def dial(cls, tower: Tower, identity: Signer | None = None) -> _Client:
        me = identity or Signer(Ed25519(), os.urandom(32))
        link = await transport.dial("127.0.0.1", tower.port, me, tower.tower_id, timeout=5)
        client = cls(link)
        assert isinstance(await client.reply(), Welcome)
        return client

    async def reply(self) -> Any:
        return parse_from_tower(await asyncio.wait_for(self.replies.get(), 10))

    async def ask(self, frame: bytes) -> Any:
        self.link.send(frame)
        return await self.reply()


def _entry(size: int = entry_size(SLOT_SIZE)) -> bytes:
    return os.urandom(size)


def test_only_the_filer_replaces_an_entry_and_never_with_an_older_seq(tmp_path: Path) -> None:
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"
    LocalL1.create(tmp_path / "l1.sqlite3", window=WINDOW)

    async def run() -> None:
        async with _tower(tmp_path, l1) as tower:
            alice, mallory = await _Client.dial(tower), await _Client.dial(tower)
            loc = os.urandom(32)
            assert await alice.ask(Put(loc, 5, _entry()).encode()) == Ack(loc, 5)
            # Another node files under the same locator: its own entry, not Alice's.
            assert await mallory.ask(Put(loc, 9, _entry()).encode()) == Ack(loc, 9)
            assert await mallory.ask(Put(loc, 2, _entry()).encode()) == Refused(
                loc, "older: the entry is at seq 9; an entry never goes back"
            )
            assert await alice.ask(Query((loc,)).encode()) == Seqs((5,))
            older = await alice.ask(Put(loc, 4, _entry()).encode())
            assert isinstance(older, Refused) and older.reason.startswith("older")
            # The same seq again (a resend after a lost ack) is taken, and changes nothing.
            assert await alice.ask(Put(loc, 5, _entry()).encode()) == Ack(loc, 5)
            assert await alice.ask(Query((loc, os.urandom(32))).encode()) == Seqs((5, None))
            assert tower.refusals == {"older": 2}

    asyncio.run(run())


def test_a_node_over_its_quota_is_refused(tmp_path: Path) -> None:
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"
    LocalL1.create(tmp_path / "l1.sqlite3", window=WINDOW)

    async def run() -> None:
        async with _tower(tmp_path, l1, max_entries_per_client=3) as tower:
            node = await _Client.dial(tower)
            locs = [os.urandom(32) for _ in range(4)]
            node.link.send_many(Put(loc, 1, _entry()).encode() for loc in locs)
            replies = [await node.reply() for _ in locs]
            assert replies[:3] == [Ack(loc, 1) for loc in locs[:3]]
            assert isinstance(replies[3], Refused) and replies[3].reason.startswith("quota")
            # An entry it holds is still updated.
            assert await node.ask(Put(locs[0], 2, _entry()).encode()) == Ack(locs[0], 2)

    asyncio.run(run())


def test_hostile_frames_are_refused_and_a_link_full_of_them_is_dropped(tmp_path: Path) -> None:
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"
    LocalL1.create(tmp_path / "l1.sqlite3", window=WINDOW)
    hostile = [
        b"",
        b"\xff",
        encode(["put", os.urandom(32), 1, os.urandom(10)]),  # an entry of the wrong size
        encode(["put", os.urandom(31), 1, _entry()]),
        encode(["put", os.urandom(32), -1, _entry()]),
        encode(["put", os.urandom(32), 1 << 63, _entry()]),
        encode(["query", []]),
        encode(["query", [os.urandom(32)] * (MAX_QUERY + 1)]),
        encode(["delete", os.urandom(32)]),
        encode({"put": 1}),
        b"\x9f\x9f\x9f\x9f\x9f",  # indefinite lengths
        b"\xd9\xd9\xf7\x80",  # a tag
    ]

    async def run() -> None:
        async with _tower(tmp_path, l1) as tower:
            honest = await _Client.dial(tower)
            hostile_node = await _Client.dial(tower)
            for frame in hostile:
                reply = await hostile_node.ask(frame)
                assert isinstance(reply, Refused) and reply.locator is None, frame
            assert tower.store.total() == 0
            hostile_node.link.send_many([b"\xff"] * (MAX_REFUSALS + 1))
            reason = await asyncio.wait_for(hostile_node.link.closed, 10)
            assert reason  # dropped
            loc = os.urandom(32)
            assert await honest.ask(Put(loc, 1, _entry()).encode()) == Ack(loc, 1)

    asyncio.run(run())


def _mutate(frame: bytes, at: int, patch: bytes) -> bytes:
    at %= len(frame) + 1
    return frame[:at] + patch + frame[at + len(patch) :]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            _mutate,
            st.sampled_from(
                [
                    Put(b"\1" * 32, 7, b"\2" * 80).encode(),
                    Query((b"\3" * 32, b"\4" * 32)).encode(),
                    Welcome(1, 2048).encode(),
                    Ack(b"\5" * 32, 3).encode(),
                    Refused(None, "no").encode(),
                    Seqs((1, None)).encode(),
                ]
            ),
            st.integers(0, 120),
            st.binary(min_size=1, max_size=4),
        ),
    )
)
def test_every_frame_parses_or_is_refused_with_a_reason(data: bytes) -> None:
    for parse in (lambda d: parse_from_node(d, 80), parse_from_tower):
        try:
            parse(data)
        except TowerProtocolError as exc:
            assert str(exc)


def test_the_tower_refutes_with_the_newest_real_update_among_garbage(tmp_path: Path) -> None:
    """The victim's entry, an older one of its own from another node of the victim, and
    garbage filed by the cheat under the same locator: the tower refutes with the newest
    doubly-signed update, then settles, and so the victim is paid its newest outcome."""
    watch = os.urandom(32)
    chain, pair, log = _pair(tmp_path, watch=watch, payments=6)
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"
    loc = locator(watch)
    newest, older = log[-1], log[3]
    forged = dataclasses.replace(newest.update, seq=50, outcome=(0, 1_000))
    forged_signed = SignedUpdate(forged, (b"\0" * 64, b"\0" * 64))  # the cheat cannot sign

    async def run() -> None:
        async with _tower(tmp_path, l1) as tower:
            victim, spare, cheat = [await _Client.dial(tower) for _ in range(3)]
            for client, update in ((victim, newest), (spare, older)):
                entry = seal(watch, pair.params, update)
                assert entry is not None
                assert await client.ask(Put(loc, update.seq, entry).encode()) == Ack(
                    loc, update.seq
                )
            bad = seal(watch, pair.params, forged_signed)
            assert bad is not None
            assert await cheat.ask(Put(loc, 50, bad).encode()) == Ack(loc, 50)
            pair.alice.l1.unilateral_close(log[1], watch)  # the stale close
            await _until(lambda: chain.channel(pair.params.channel_id).registered_seq == newest.seq)
            await _until(
                lambda: chain.channel(pair.params.channel_id).status is L1ChannelStatus.SETTLED, 15
            )
            await _until(lambda: not tower.watched)  # it let the channel go

    asyncio.run(run())
    view = chain.channel(pair.params.channel_id)
    assert view.payouts == newest.update.outcome
    kinds = [e.kind for e in chain.events()]
    assert kinds[-3:] == [L1EventKind.CLOSING_STARTED, L1EventKind.REFUTED, L1EventKind.SETTLED]


def test_the_tower_leaves_an_honest_close_alone_until_it_settles(tmp_path: Path) -> None:
    watch = os.urandom(32)
    chain, pair, log = _pair(tmp_path, watch=watch, payments=3)
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"

    async def run() -> None:
        async with _tower(tmp_path, l1) as tower:
            node = await _Client.dial(tower)
            entry = seal(watch, pair.params, log[-1])
            assert entry is not None
            await node.ask(Put(locator(watch), log[-1].seq, entry).encode())
            pair.bob.l1.unilateral_close(log[-1], watch)  # the newest: nothing to refute
            await _until(
                lambda: chain.channel(pair.params.channel_id).status is L1ChannelStatus.SETTLED, 15
            )
            await _until(lambda: not tower.watched)  # it let the channel go

    asyncio.run(run())
    kinds = [e.kind for e in chain.events()]
    assert L1EventKind.REFUTED not in kinds and kinds[-1] is L1EventKind.SETTLED


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        await asyncio.sleep(0.05)
