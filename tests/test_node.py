"""Node processes over TCP on loopback and a shared local L1 file, driven by the CLI.

Every test here starts real ``bfs-smr node`` processes and talks to them as a user
would: through ``bfs-smr`` commands (or, for loops, the same control endpoint the
commands use). Nothing is mocked: the L1 is a SQLite file, stores fsync, links encrypt.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodeproc import NodeProc, cli, local_l1, ok, watch_secret_of
from tests.nodeproc import open_channel as _open

WINDOW = 2


@pytest.fixture
def l1(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A local L1 file; its window is WINDOW, or the test's ``indirect`` parameter."""
    return local_l1(tmp_path, getattr(request, "param", WINDOW))


@pytest.fixture
def nodes(tmp_path: Path, l1: str) -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []

    def make() -> NodeProc:
        node = NodeProc(tmp_path / f"node{len(started)}", l1)
        started.append(node)
        return node

    made = [make(), make()]
    yield made
    for node in started:
        if node.alive():
            assert node.stop() == 0, node.log.read_text()[-3000:]


#: What Bob must allow for Alice's games with equal stakes: by default a node deposits
#: nothing into, and runs only payments in, channels that others open.
GAMES = ("--accept-app", "tictactoe", "--max-inbound-deposit", "10")


def _start_pair(
    nodes: list[NodeProc], l1: str, fund: int = 1_000, *, bob_accepts: tuple[str, ...] = ()
) -> tuple[NodeProc, NodeProc]:
    alice, bob = nodes
    bob.extra += bob_accepts
    ok("l1", "fund", "--l1", l1, alice.node_id, str(fund))
    ok("l1", "fund", "--l1", l1, bob.node_id, str(fund))
    return alice.start(), bob.start()


def test_open_pay_show_close_from_the_command_line(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1)
    channel = _open(alice, bob)
    assert ok("l1", "balance", "--l1", l1, alice.node_id) == {
        "node_id": alice.node_id,
        "balance": 500,
    }
    seqs = []
    for amount in (10, 20, 5):
        paid = ok("channel", "pay", "--data-dir", str(alice.dir), channel, str(amount))
        assert paid["channel"] == channel
        seqs.append(paid["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    # A batch from the command line: five payments of 2 in one update, or none at all.
    batch = ok("channel", "pay", "--data-dir", str(alice.dir), channel, "2", "--count", "5")
    assert batch == {"channel": channel, "seq": seqs[-1] + 1, "count": 5}
    too_many = cli("channel", "pay", "--data-dir", str(alice.dir), channel, "100", "--count", "5")
    assert too_many.code == 2 and "command 4 of the batch" in too_many.stderr
    seqs.append(batch["seq"])
    # Bob pays back from his side (a request the sequencer proposes).
    ok("channel", "pay", "--data-dir", str(bob.dir), channel[:12], "7")
    for node in (alice, bob):
        shown = ok("channel", "show", "--data-dir", str(node.dir), channel)
        assert shown["seq"] == seqs[-1] + 1
        assert shown["phase"] == "open"
        assert shown["outcome"] == {alice.node_id: 500 - 45 + 7, bob.node_id: 45 - 7}
    listed = ok("channel", "list", "--data-dir", str(bob.dir))
    assert [c["channel"] for c in listed["channels"]] == [channel]
    closed = ok("channel", "close", "--data-dir", str(bob.dir), channel)
    assert closed == {"channel": channel, "payouts": {alice.node_id: 462, bob.node_id: 38}}
    assert ok("l1", "balance", "--l1", l1, alice.node_id)["balance"] == 500 + 462
    assert ok("l1", "balance", "--l1", l1, bob.node_id)["balance"] == 1_000 + 38
    # Closing again reports the same payouts; paying on a settled channel is refused.
    assert ok("channel", "close", "--data-dir", str(alice.dir), channel) == closed
    refused = cli("channel", "pay", "--data-dir", str(alice.dir), channel, "1", "--json")
    assert refused.code == 2 and "settled" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_concurrent_payments_are_pipelined_and_batched(nodes: list[NodeProc], l1: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice, bob = nodes
    alice.extra = ("--max-in-flight", "2", "--max-batch", "8")  # a small window fills up
    alice, bob = _start_pair(nodes, l1)
    channel = _open(alice, bob)
    with ThreadPoolExecutor(16) as pool:
        paid = list(pool.map(lambda _: alice.call("pay", channel=channel, amount=1), range(200)))
    seqs = [p["seq"] for p in paid]
    # Every payment reported done, each once; with 16 at a time and 2 in flight, the
    # queued ones shared updates (automatic batching), at most 8 to an update.
    assert len(seqs) == 200 and min(seqs) >= 1
    per_update = {seq: seqs.count(seq) for seq in set(seqs)}
    assert len(per_update) < 200 and max(per_update.values()) <= 8
    shown = ok("channel", "show", "--data-dir", str(bob.dir), channel)
    assert shown["seq"] == max(seqs) == len(per_update)
    assert shown["outcome"] == {alice.node_id: 300, bob.node_id: 200}


def test_unilateral_close_waits_out_the_window(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1, bob_accepts=("--max-inbound-deposit", "100"))
    channel = _open(alice, bob, "--peer-deposit", "100")
    ok("channel", "pay", "--data-dir", str(alice.dir), channel, "50")
    bob.stop()  # the peer is gone: only a unilateral close can get the money out
    closed = ok("channel", "close", "--data-dir", str(alice.dir), channel, "--unilateral")
    assert closed["payouts"] == {alice.node_id: 450, bob.node_id: 150}
    assert ok("l1", "balance", "--l1", l1, bob.node_id)["balance"] == 900 + 150
    alice.wait_log("L1 settle")


def test_a_unilateral_close_at_seq_0_settles(nodes: list[NodeProc], l1: str) -> None:
    """Regression (issue 11, defect 4): a close registered at seq 0 was taken for no
    close at all; the nodes tried to refute it on every look and never settled."""
    alice, bob = _start_pair(nodes, l1)
    channel = _open(alice, bob)
    closed = ok("channel", "close", "--data-dir", str(alice.dir), channel, "--unilateral")
    assert closed["payouts"] == {alice.node_id: 500, bob.node_id: 0}
    assert ok("channel", "close", "--data-dir", str(bob.dir), channel) == closed


def test_a_stale_close_is_refuted_by_the_running_node(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1)
    channel = _open(alice, bob)
    for _ in range(3):
        ok("channel", "pay", "--data-dir", str(alice.dir), channel, "100")
    alice.stop()
    # Alice turns cheat: from her own store she registers seq 0, before she paid anything.
    from bfs_smr.adapters.local import LocalL1

    from bfs_smr.runtime.store import Store

    with Store(alice.dir) as store:
        stale = store.log_range(bytes.fromhex(channel), 0, 0)[0]
        params = store.params(bytes.fromhex(channel))
    chain = LocalL1(Path(l1.removeprefix("local:")))
    reveal = watch_secret_of(alice, bob, params)
    chain.adapter(bytes.fromhex(alice.node_id)).unilateral_close(stale, reveal)
    refuted = bob.wait_log("stale close on L1: refuting", timeout=WINDOW * 5)
    assert refuted["registered_seq"] == 0 and refuted["our_seq"] == 3
    bob.wait_log("L1 refute")
    # Bob's node settles when the window ends, with the newest state.
    closed = bob.call("close", channel=channel)
    assert closed["payouts"] == {alice.node_id: 200, bob.node_id: 300}
    assert ok("l1", "balance", "--l1", l1, bob.node_id)["balance"] == 1_000 + 300


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s (a stall)"
        time.sleep(0.01)


def test_kill_9_mid_stream_loses_nothing(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1)
    channel = _open(alice, bob, deposit=1_000)
    done: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def pay_loop() -> None:
        while not stop.is_set():
            try:
                done.append(alice.call("pay", timeout=20, channel=channel, amount=1)["seq"])
            except Exception as exc:  # noqa: BLE001 - counted; the test decides
                failures.append(str(exc))
                stop.wait(0.05)

    worker = threading.Thread(target=pay_loop)
    worker.start()
    try:
        _wait_for(lambda: len(done) >= 50, "50 payments before the kill")
        bob.kill()  # mid-stream: Alice's next payment is somewhere between the two
        before = len(done)
        stop.wait(0.3)
        bob.start()
        _wait_for(lambda: len(done) >= before + 50, "50 payments after Bob's restart")
        alice.kill()  # now the sequencer, with its proposal in flight
        before = len(done)
        alice.start()
        _wait_for(lambda: len(done) >= before + 50, "50 payments after Alice's restart")
    finally:
        stop.set()
        worker.join(60)
    shown_a = alice.call("show", channel=channel)
    shown_b = bob.call("show", channel=channel)
    assert shown_a["seq"] == shown_b["seq"]
    paid = shown_a["outcome"][bob.node_id]
    # Every payment reported done is in the state; beyond those, only payments whose call
    # failed (in flight at a kill, or timed out while a node was down) may have completed.
    assert len(done) <= paid <= len(done) + len(failures) + 1
    assert done == sorted(done) and len(set(done)) == len(done)
    closed = ok("channel", "close", "--data-dir", str(alice.dir), channel)
    assert closed["payouts"][bob.node_id] == paid


def test_errors_are_one_line_and_exit_2(nodes: list[NodeProc], l1: str, tmp_path: Path) -> None:
    alice, bob = nodes
    cases = [
        ("init", "--data-dir", str(alice.dir)),  # already a node there
        ("channel", "list", "--data-dir", str(alice.dir)),  # no node running
        ("l1", "balance", "--l1", l1, "not-hex"),
        ("l1", "balance", "--l1", f"local:{tmp_path / 'nothing'}", alice.node_id),
        # (issue 15: l1 init on an existing local L1 reports it, as on the EVM; only
        # another window than the one it has is an error)
        ("l1", "init", "--l1", l1, "--window", "12345"),
        ("node", "--data-dir", str(tmp_path / "empty"), "--listen", "127.0.0.1:0", "--l1", l1),
        ("node", "--data-dir", str(alice.dir), "--listen", "nowhere", "--l1", l1),
        ("l1", "fund", "--l1", "moon:1", alice.node_id, "5"),
    ]
    for args in cases:
        result = cli(*args, "--json")
        assert result.code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfs-smr: error:"), (args, result.stderr)
    alice.start()
    opening = ("channel", "open", "--data-dir", str(alice.dir), "--peer", "127.0.0.1:1")
    opening += ("--peer-id", bob.node_id, "--deposit")
    for args in [
        ("channel", "pay", "--data-dir", str(alice.dir), "00" * 32, "5"),
        (*opening, "5"),  # nothing funded
        (*opening, "0"),  # no deposit on either side: it would lock nothing
        ("channel", "send", "--data-dir", str(alice.dir), "abcd", "{not json"),
        # a float is not plain data: refused before it goes to the node
        ("channel", "send", "--data-dir", str(alice.dir), "abcd", '{"cell": 1.5}'),
    ]:
        result = cli(*args, "--json", "--timeout", "3")
        assert result.code == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        if args[-2:] == ("--deposit", "0"):
            assert "must lock some value" in result.stderr, result.stderr
    assert "unsupported item of type float" in result.stderr


def test_the_control_endpoint_needs_the_secret(nodes: list[NodeProc], l1: str) -> None:
    import socket

    alice = nodes[0].start()
    info = json.loads((alice.dir / "control.json").read_text())
    from bfs_smr.runtime.node._control import encode_request

    with socket.create_connection(("127.0.0.1", info["port"]), timeout=5) as s:
        s.sendall(encode_request("0" * 64, "status", {}))
        reply = json.loads(s.makefile().readline())
    assert reply == {"ok": False, "error": "wrong control secret"}
    assert alice.call("status")["node_id"] == alice.node_id
    assert (alice.dir / "control.secret").stat().st_mode & 0o077 == 0
    assert (alice.dir / "identity.key").stat().st_mode & 0o077 == 0
    secret = (alice.dir / "control.secret").read_text().strip()
    seed = (alice.dir / "identity.key").read_text().strip()
    alice.stop()
    text = alice.log.read_text()
    assert secret not in text and seed not in text


def _move(node: NodeProc, channel: str, cell: int) -> dict[str, object]:
    result: dict[str, object] = ok(
        "channel", "send", "--data-dir", str(node.dir), channel, json.dumps({"cell": cell})
    )
    return result


def test_tictactoe_between_two_nodes_from_the_command_line(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1, bob_accepts=GAMES)
    channel = _open(alice, bob, "--app", "tictactoe", "--peer-deposit", "10", deposit=10)
    shown = ok("channel", "show", "--data-dir", str(bob.dir), channel)
    assert shown["app"] == "tictactoe" and shown["to_move"] == alice.node_id
    # Alice plays X in the top row, Bob O in the middle row: X wins with cell 2.
    for node, cell in [(alice, 0), (bob, 3), (alice, 1), (bob, 4)]:
        _move(node, channel, cell)
    wrong = cli("channel", "send", "--data-dir", str(bob.dir), channel, '{"cell": 8}', "--json")
    assert wrong.code == 2 and "not your turn" in wrong.stderr
    taken = cli("channel", "send", "--data-dir", str(alice.dir), channel, '{"cell": 4}', "--json")
    assert taken.code == 2 and "taken" in taken.stderr
    _move(alice, channel, 2)
    for node in (alice, bob):
        shown = ok("channel", "show", "--data-dir", str(node.dir), channel)
        assert shown["state"][0] == [1, 1, 1, 2, 2, 0, 0, 0, 0]
        assert shown["to_move"] is None
        assert shown["outcome"] == {alice.node_id: 20, bob.node_id: 0}
    closed = ok("channel", "close", "--data-dir", str(bob.dir), channel)
    assert closed["payouts"] == {alice.node_id: 20, bob.node_id: 0}


def test_a_silent_player_loses_to_a_forced_move(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1, bob_accepts=GAMES)
    channel = _open(alice, bob, "--app", "tictactoe", "--peer-deposit", "10", deposit=10)
    _move(alice, channel, 0)
    _move(bob, channel, 4)
    bob.stop()  # Bob walks away with the game lost-looking for him and it is Alice's turn
    pending = cli(
        "channel",
        "send",
        "--data-dir",
        str(alice.dir),
        channel,
        '{"cell": 8}',
        "--json",
        "--timeout",
        "1",
    )
    assert pending.code == 2 and "pending" in pending.stderr
    # Closing here would make Alice (to move) forfeit; her node forces the move she
    # signed onto L1 instead, and Bob, silent for a window, loses the pot.
    closed = ok("channel", "close", "--data-dir", str(alice.dir), channel, "--unilateral")
    assert closed["payouts"] == {alice.node_id: 20, bob.node_id: 0}
    forced = alice.wait_log("forcing a move on L1")
    assert forced["seq"] == 3


@pytest.mark.parametrize("l1", [6], indirect=True)  # time to refute, then to answer
def test_a_second_update_forced_at_a_signed_seq_is_refuted(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1, bob_accepts=GAMES)
    channel = _open(alice, bob, "--app", "tictactoe", "--peer-deposit", "10", deposit=10)
    moves = [(alice, 0), (bob, 4), (alice, 1), (bob, 5), (alice, 8)]  # X missed cell 2
    for node, cell in moves:
        _move(node, channel, cell)
    alice.stop()
    # Alice cheats: she registers seq 4 and forces, at seq 5, the move she wishes she had
    # made (cell 2, three in a row) where both signed cell 8. Bob's node is paused
    # meanwhile, so it first sees the forced update.
    from bfs_smr.adapters.local import LocalL1

    from bfs_smr import CommandEntry, SignedUpdate, Update
    from bfs_smr.plugins import load_app
    from bfs_smr.runtime.store import Store
    from bfs_smr.runtime.store._datadir import DataDir

    cid = bytes.fromhex(channel)
    with Store(alice.dir) as store:
        params = store.params(cid)
        registered, signed = store.log_range(cid, 4, 5)
    app = load_app("tictactoe")
    state = app.initial_state(params)
    for actor, (_, cell) in zip((0, 1, 0, 1), moves, strict=False):
        state = app.apply(state, {"cell": cell}, actor)
    won = app.apply(state, {"cell": 2}, 0)
    other = Update(
        channel_id=cid,
        seq=5,
        prev_hash=registered.update.entry_hash(),
        app_id=params.app_id,
        commands=(CommandEntry(0, signed.update.commands[0].ref, {"cell": 2}),),
        state_hash=app.state_hash(won),
        outcome=app.checked_outcome(won, params),
    )
    cheat = LocalL1(Path(l1.removeprefix("local:"))).adapter(bytes.fromhex(alice.node_id))
    sig = DataDir(alice.dir).identity().sign(cheat.format.digest(other, other.body()))
    assert bob.proc is not None
    bob.proc.send_signal(signal.SIGSTOP)
    try:
        cheat.unilateral_close(registered, watch_secret_of(alice, bob, params))
        cheat.force_move(app.encode_state(state), SignedUpdate(other, (sig, None)))
    finally:
        bob.proc.send_signal(signal.SIGCONT)
    # A doubly-signed update beats one forced at its seq: Bob's node refutes with cell 8.
    refuted = bob.wait_log("stale close on L1: refuting")
    assert refuted["registered_seq"] == 5 and refuted["our_seq"] == 5, refuted
    bob.wait_log("L1 refute")
    # Now it is Bob's move on L1, and he wins with it.
    answer = ok("channel", "send", "--data-dir", str(bob.dir), channel, '{"cell": 3}')
    assert answer["forced"] is True and answer["seq"] == 6, answer
    closed = bob.call("close", channel=channel)
    assert closed["payouts"] == {alice.node_id: 0, bob.node_id: 20}, closed
    assert not [e for e in bob.log_events() if e.get("event") == "adopted a move forced on L1"]


@pytest.mark.parametrize("l1", [6], indirect=True)  # long enough to come back and answer
def test_a_player_adopts_the_move_forced_on_l1_and_answers(nodes: list[NodeProc], l1: str) -> None:
    alice, bob = _start_pair(nodes, l1, bob_accepts=GAMES)
    channel = _open(alice, bob, "--app", "tictactoe", "--peer-deposit", "10", deposit=10)
    _move(alice, channel, 0)
    _move(bob, channel, 4)
    bob.stop()
    pending = cli(
        "channel", "send", "--data-dir", str(alice.dir), channel, '{"cell": 8}', "--timeout", "1"
    )
    assert pending.code == 2 and "pending" in pending.stderr
    closed: list[dict[str, Any]] = []
    closing = threading.Thread(
        target=lambda: closed.append(
            ok("channel", "close", "--data-dir", str(alice.dir), channel, "--unilateral")
        )
    )
    closing.start()
    try:
        assert alice.wait_log("forcing a move on L1")["seq"] == 3
        # Bob comes back while the window runs: his node takes Alice's forced move as the
        # position, and it is his turn.
        bob.start()
        adopted = bob.wait_log("adopted a move forced on L1")
        assert adopted["seq"] == 3 and adopted["to_move"] == "this node", adopted
        shown = ok("channel", "show", "--data-dir", str(bob.dir), channel)
        assert shown["phase"] == "closing" and shown["to_move"] == bob.node_id, shown
        assert shown["state"][0] == [1, 0, 0, 0, 2, 0, 0, 0, 1], shown
        # His move goes to L1 as a force move in turn, with a fresh window for Alice.
        answer = ok("channel", "send", "--data-dir", str(bob.dir), channel, '{"cell": 2}')
        assert answer["forced"] is True and answer["seq"] == 4, answer
        theirs = alice.wait_log("adopted a move forced on L1")
        assert theirs["seq"] == 4 and theirs["to_move"] == "this node", theirs
    finally:
        closing.join(60)
    # Alice does not answer in her window: to move when it settles, she forfeits the pot.
    assert closed and closed[0]["payouts"] == {alice.node_id: 0, bob.node_id: 20}, closed
    assert ok("l1", "balance", "--l1", l1, bob.node_id)["balance"] == 1_000 - 10 + 20
    # Both start again (found by the soak test: the node that answered a forced move
    # called its own store damaged, for good) and show the channel as settled.
    for node in (alice, bob):
        assert node.stop() == 0
        node.start()
        shown = ok("channel", "show", "--data-dir", str(node.dir), channel)
        assert shown["payouts"] == {alice.node_id: 0, bob.node_id: 20}, shown
