"""The local L1 (adapters/local.py): MemoryL1's rules on a SQLite file shared by processes.

Real files under ``tmp_path``, real OS processes, the real clock where time matters. The
rules themselves are covered by the conformance kit (tests/test_l1_conformance.py), which
also runs on this L1.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bfs_smr.adapters.local import LocalAdapter, LocalL1
from conftest import make_pair

from bfs_smr import ChannelParams, L1ChannelStatus, L1Error, L1Event, L1EventKind, LocalError
from bfs_smr.runtime import LocalPair, load_app

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: int = 1_000) -> None:
        self.time = now

    def __call__(self) -> int:
        return self.time


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh Python process (``sys.argv[1:]`` = ``args``)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def check_consistent(path: Path, minted: int) -> None:
    """The file is whole, value is conserved and every channel agrees with the events."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    chain = LocalL1(path)
    assert chain.total_supply() == minted
    events = chain.events()
    assert [e.index for e in events] == list(range(len(events))) == list(range(chain.transactions))
    opened = [e.channel_id for e in events if e.kind is L1EventKind.OPENED]
    assert len(opened) == len(set(opened))
    for cid in opened:
        info = chain.channel(cid)
        last = [e.kind for e in events if e.channel_id == cid][-1]
        if info.status is L1ChannelStatus.CANCELLED:
            assert info.locked == 0 and last is L1EventKind.CANCELLED
        else:
            assert info.status in (L1ChannelStatus.FUNDING, L1ChannelStatus.OPEN)
            assert last in (L1EventKind.OPENED, L1EventKind.DEPOSITED)


# -- create and open ------------------------------------------------------------------------


def test_create_then_open_gives_the_same_chain(tmp_path: Path) -> None:
    path = tmp_path / "l1.sqlite3"
    chain = LocalL1.create(path, window=7)
    assert chain.path == path and chain.window == 7
    assert chain.chain_id.startswith("local-") and len(chain.chain_id) == len("local-") + 8
    assert chain.format.domain == b"memory:" + chain.chain_id.encode()
    again = LocalL1(str(path))
    assert (again.chain_id, again.window, again.format.domain) == (
        chain.chain_id,
        7,
        chain.format.domain,
    )
    assert LocalL1.create(tmp_path / "other").chain_id != chain.chain_id
    named = LocalL1.create(tmp_path / "named", chain_id="dev")
    assert named.format.domain == b"memory:dev" and named.window == 60
    adapter = again.adapter(b"k" * 32)
    assert isinstance(adapter, LocalAdapter) and adapter.supports_force_move
    assert adapter.chain is again and adapter.format is again.format


def test_bad_arguments_are_refused_before_a_file_is_made(tmp_path: Path) -> None:
    for kwargs in ({"window": 0}, {"window": -1}, {"chain_id": ""}, {"chain_id": "x" * 300}):
        with pytest.raises(LocalError):
            LocalL1.create(tmp_path / "l1", **kwargs)
    assert not (tmp_path / "l1").exists()


def one_line_naming(exc: pytest.ExceptionInfo[L1Error], path: Path) -> str:
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_bad_paths_are_l1_errors_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    with pytest.raises(L1Error) as exc:
        LocalL1(missing)
    assert "no such L1 file" in one_line_naming(exc, missing)
    assert not missing.exists()  # opening never creates

    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a database, just some text\n" * 10)
    with pytest.raises(L1Error) as exc:
        LocalL1(text)
    assert "not a bfs-smr L1 file" in one_line_naming(exc, text)
    assert text.read_bytes() == b"not a database, just some text\n" * 10

    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(L1Error) as exc:
        LocalL1(foreign)
    assert "not a bfs-smr L1 file" in one_line_naming(exc, foreign)
    with sqlite3.connect(foreign) as db:  # left as it was: not switched to WAL
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()

    with pytest.raises(L1Error) as exc:
        LocalL1(tmp_path)
    assert "not a regular file" in one_line_naming(exc, tmp_path)

    path = tmp_path / "l1.sqlite3"
    LocalL1.create(path).mint(b"a" * 32, 5)
    for existing in (path, text):
        before = existing.read_bytes()
        with pytest.raises(L1Error) as exc:
            LocalL1.create(existing)
        assert "exists already" in one_line_naming(exc, existing)
        assert existing.read_bytes() == before
    assert LocalL1(path).balance(b"a" * 32) == 5

    with pytest.raises(L1Error) as exc:
        LocalL1.create(tmp_path / "no" / "dir" / "l1")
    assert "cannot create" in one_line_naming(exc, tmp_path / "no" / "dir" / "l1")


# -- one file, several connections ----------------------------------------------------------


def test_two_objects_on_one_file_see_each_others_transactions(tmp_path: Path) -> None:
    path = tmp_path / "l1.sqlite3"
    clock = Clock()
    first = LocalL1.create(path, clock=clock)
    second = LocalL1(path, clock=clock)
    alice, bob = LocalPair.new_signers(first.format.scheme)
    first.mint(alice.public_key, 600)
    second.mint(bob.public_key, 400)
    assert (second.balance(alice.public_key), first.balance(bob.public_key)) == (600, 400)
    pair = LocalPair(
        load_app("payments"),
        alice=alice,
        bob=bob,
        alice_l1=first.adapter(alice.public_key),
        bob_l1=second.adapter(bob.public_key),
        deposits=(600, 400),
        challenge_window=first.window,
    )
    cid = pair.params.channel_id
    pair.alice.chan.start()
    pair.pump()
    first.open(alice.public_key, pair.params)
    assert second.channel(cid).status is L1ChannelStatus.FUNDING
    second.deposit(bob.public_key, cid, 400)
    assert first.channel(cid).status is L1ChannelStatus.OPEN
    assert first.balance(bob.public_key) == 0
    pair.alice.chan.issue({"pay": 100})
    pair.pump()
    committed = pair.bob.chan.committed
    assert committed is not None
    deadline = pair.bob.l1.unilateral_close(committed)
    assert deadline == clock.time + 60
    info = first.channel(cid)
    assert (info.status, info.registered_seq, info.deadline) == (
        L1ChannelStatus.CLOSING,
        committed.seq,
        deadline,
    )
    clock.time = deadline
    assert pair.alice.l1.settle(cid) == (500, 500)
    assert (second.balance(alice.public_key), first.balance(bob.public_key)) == (500, 500)
    kinds = [L1EventKind.OPENED, L1EventKind.DEPOSITED, L1EventKind.CLOSING_STARTED]
    assert [e.kind for e in first.events()] == [*kinds, L1EventKind.SETTLED]
    assert second.events(3) == first.events()[3:] and second.events(4) == []
    assert first.events()[-1].payouts == (500, 500) and first.events()[-1].time == deadline
    assert first.transactions == second.transactions == 4
    assert first.total_supply() == second.total_supply() == 1_000
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.settle(cid)


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_a_rejected_transaction_changes_nothing(tmp_path: Path) -> None:
    chain = LocalL1.create(tmp_path / "l1")
    _, pair = make_pair(chain=chain)
    pair.open()
    pair.alice.chan.issue({"pay": 1})
    pair.pump()
    committed = pair.bob.chan.committed
    assert committed is not None
    chain.mint(pair.params.participants[0], 10)
    before = dump(chain.path)
    with pytest.raises(L1Error, match="exists already"):
        pair.alice.l1.open(pair.params)
    with pytest.raises(L1Error, match="final"):
        pair.alice.l1.cooperative_close(committed)
    with pytest.raises(L1Error, match="not funding"):
        pair.alice.l1.deposit(pair.params.channel_id, 1)
    with pytest.raises(LocalError):
        chain.mint(b"x" * 32, -1)
    with pytest.raises(LocalError, match="clock"):
        chain.advance(1)

    class FailsLate(LocalL1):  # rejects after the debit and the event are written
        def _add_event(self, event: L1Event) -> None:
            super()._add_event(event)
            raise L1Error("rejected at the last moment")

    again = dataclasses.replace(pair.params, deposits=(10, 0), nonce=1)
    with pytest.raises(L1Error, match="last moment"):
        FailsLate(chain.path).open(again.participants[0], again)
    assert dump(chain.path) == before and chain.transactions == 1
    assert chain.open(again.participants[0], again) == again.channel_id
    chain.mint(b"x" * 32, 10**30)  # amounts are unbounded, as on MemoryL1
    assert chain.balance(b"x" * 32) == 10**30


def test_force_moves_are_stored_and_answered_across_connections(tmp_path: Path) -> None:
    clock = Clock()
    chain = LocalL1.create(tmp_path / "l1", clock=clock)
    _, pair = make_pair("tictactoe", (50, 50), window=30, chain=chain)
    pair.open()
    for cell in (4, 0):
        pair.parties[pair.alice.chan.state[1]].chan.issue({"cell": cell})
        pair.pump()
    assert pair.alice.chan.committed is not None
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    clock.time += 20
    move = pair.alice.chan.force_move({"cell": 8})
    deadline = pair.alice.l1.force_move(pair.app.encode_state(pair.alice.chan.state), move)
    assert deadline == clock.time + 30
    other = LocalL1(chain.path, clock=clock)  # a fresh connection reads the forced state
    info = other.channel(pair.params.channel_id)
    assert info.registered_seq == move.seq
    assert info.forced == move  # the other party adopts the move from here
    assert other.events()[-1].kind is L1EventKind.FORCE_MOVED
    clock.time += 29
    with pytest.raises(L1Error, match="still open"):
        other.settle(pair.params.participants[1], pair.params.channel_id)
    clock.time += 1
    assert other.settle(pair.params.participants[1], pair.params.channel_id) == (100, 0)


# -- many processes ---------------------------------------------------------------------------

WORKER = """
    import os, sys, time
    from pathlib import Path
    from bfs_smr.adapters.local import LocalL1
    from bfs_smr import ChannelParams, L1Error

    path, me, rounds, shared, peer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(
        bytes.fromhex, sys.argv[4:6])
    chain = LocalL1(path)
    Path(f"{path}.ready{me}").touch()
    while not Path(f"{path}.go").exists():
        time.sleep(0.005)
    own = bytes([me]) * 32

    def params(nonce, opener=own):
        return ChannelParams(l1=chain.format.domain, participants=(opener, peer),
                             deposits=(10, 0), app="payments", app_version=1, nonce=nonce)

    for i in range(rounds):
        chain.mint(shared, 1)
        chain.mint(own, 10)
        chain.open(own, params(i))
    chain.mint(shared, 10)
    try:  # every worker races to open this one channel
        chain.open(shared, params(0, shared))
        print("won")
    except L1Error as exc:
        assert "exists already" in str(exc), exc
"""


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "l1.sqlite3"
    chain = LocalL1.create(path)
    shared, peer = b"s" * 32, b"p" * 32
    workers, rounds = 6, 25
    procs = [spawn(WORKER, path, i + 1, rounds, shared.hex(), peer.hex()) for i in range(workers)]
    deadline = time.monotonic() + 60
    while not all(Path(f"{path}.ready{i + 1}").exists() for i in range(workers)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    Path(f"{path}.go").touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert sum(out.count("won") for out, _ in outputs) == 1
    minted = workers * rounds * 11 + workers * 10
    assert chain.total_supply() == minted
    assert chain.balance(shared) == workers * rounds + workers * 10 - 10
    for i in range(workers):
        assert chain.balance(bytes([i + 1]) * 32) == 0
    events = chain.events()
    assert len(events) == chain.transactions == workers * rounds + 1
    assert {e.kind for e in events} == {L1EventKind.OPENED}
    times = [e.time for e in events]
    assert times == sorted(times)  # the clock is read under the write lock
    check_consistent(path, minted)


CHURN = """
    import random, sys
    from bfs_smr.adapters.local import LocalL1
    from bfs_smr import ChannelParams, L1Error

    chain = LocalL1(sys.argv[1])
    accounts = [bytes([i]) * 32 for i in range(1, 5)]
    print("ready", flush=True)
    while True:  # open, top up and cancel channels until killed
        a, b = random.sample(accounts, 2)
        params = ChannelParams(l1=chain.format.domain, participants=(a, b),
                               deposits=(random.randint(1, 50), random.randint(1, 50)),
                               app="payments", app_version=1, nonce=random.getrandbits(62))
        try:
            cid = chain.open(a, params)
            if random.random() < 0.5:
                chain.deposit(b, cid, params.deposits[1])
            else:
                chain.cancel(b, cid)
        except L1Error:
            pass
"""


def test_a_process_killed_mid_stream_leaves_a_consistent_file(tmp_path: Path) -> None:
    path = tmp_path / "l1.sqlite3"
    chain = LocalL1.create(path)
    for i in range(1, 5):
        chain.mint(bytes([i]) * 32, 10_000)
    for round_ in range(6):
        proc = spawn(CHURN, path)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        before = chain.transactions
        while chain.transactions < before + 20 + 7 * round_:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.001)
        time.sleep(random.random() / 50)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        check_consistent(path, 40_000)
    chain.mint(b"n" * 32, 5)  # and the file still takes transactions
    assert chain.balance(b"n" * 32) == 5


PAUSED = """
    import sys, time
    from pathlib import Path
    from bfs_smr.adapters.local import LocalL1
    from bfs_smr import ChannelParams

    class Paused(LocalL1):  # stops for good half-way through a transaction
        def _add_event(self, event):
            super()._add_event(event)
            Path(sys.argv[1] + ".paused").touch()
            time.sleep(600)

    chain = Paused(sys.argv[1])
    chain.open(b"a" * 32, ChannelParams(l1=chain.format.domain, participants=(b"a" * 32,
               b"b" * 32), deposits=(70, 0), app="payments", app_version=1))
"""


def test_a_process_killed_holding_the_write_lock_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l1.sqlite3"
    chain = LocalL1.create(path)
    chain.mint(b"a" * 32, 100)
    proc = spawn(PAUSED, path)
    deadline = time.monotonic() + 60
    while not Path(f"{path}.paused").exists():  # debited, event written, not committed
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1]
        time.sleep(0.01)
    assert chain.balance(b"a" * 32) == 100 and chain.transactions == 0  # readers go on
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    check_consistent(path, 100)
    assert chain.balance(b"a" * 32) == 100 and chain.events() == []
    started = time.monotonic()
    params = ChannelParams(
        l1=chain.format.domain,
        participants=(b"a" * 32, b"b" * 32),
        deposits=(70, 0),
        app="payments",
        app_version=1,
    )
    assert chain.open(b"a" * 32, params) == params.channel_id  # the lock died with it
    assert time.monotonic() - started < 5
    assert chain.balance(b"a" * 32) == 30 and chain.transactions == 1


# -- wall-clock time --------------------------------------------------------------------------


def test_the_window_runs_on_the_wall_clock(tmp_path: Path) -> None:
    chain = LocalL1.create(tmp_path / "l1", window=1)
    _, pair = make_pair(chain=chain, window=chain.window)
    assert pair.params.challenge_window == chain.window == 1
    pair.open()
    pair.alice.chan.issue({"pay": 10})
    pair.pump()
    committed = pair.bob.chan.committed
    assert committed is not None
    time.sleep(1.02 - time.time() % 1)  # just after a second starts: the next is ~1 s away
    deadline = pair.bob.l1.unilateral_close(committed)
    assert deadline == int(time.time()) + 1 and chain.now() == deadline - 1
    with pytest.raises(L1Error, match="still open"):
        pair.alice.l1.settle(pair.params.channel_id)
    time.sleep(max(0.0, deadline - time.time()) + 0.05)
    with pytest.raises(L1Error, match="ended"):
        pair.alice.l1.refute(committed)
    assert pair.alice.l1.settle(pair.params.channel_id) == (990, 10)
    assert chain.events()[-1].time >= deadline


def test_a_busy_file_is_an_l1_error(tmp_path: Path) -> None:
    """Every failure of the file (here: another writer holds it) is an L1Error, which a
    node retries, never a raw sqlite3 error that would end its L1 watch (issue 11)."""
    chain = LocalL1.create(tmp_path / "l1.sqlite3")
    chain._query("PRAGMA busy_timeout=0")  # fail at once instead of after 30 s
    other = sqlite3.connect(tmp_path / "l1.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock
        with pytest.raises(L1Error, match="database is locked"):
            chain.mint(b"\x01" * 32, 5)
        with pytest.raises(L1Error, match="database is locked"):
            chain.adapter(b"\x01" * 32).deposit(b"\x02" * 32, 5)
    finally:
        other.execute("ROLLBACK")
        other.close()
        chain.close()
