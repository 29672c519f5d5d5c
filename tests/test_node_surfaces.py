"""What a node exposes beyond its channels, tried as a stranger or a careless operator would:
the inbound-channel policy, the store it must not silently recreate, the control endpoint
under idle connections, and its start-up and shutdown edges.

Real ``bfs-smr node`` processes on loopback and a local L1 file, as in test_node.py.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile import shared_reference_bomb
from tests.nodeproc import NodeProc, cli, local_l1, ok
from tests.nodeproc import open_channel as _open

WINDOW = 2


@pytest.fixture
def l1(tmp_path: Path) -> str:
    return local_l1(tmp_path, WINDOW)


@pytest.fixture
def nodes(tmp_path: Path, l1: str) -> Iterator[list[NodeProc]]:
    made = [NodeProc(tmp_path / name, l1) for name in ("alice", "bob", "carol")]
    for node in made:
        ok("l1", "fund", "--l1", l1, node.node_id, "1000")
    yield made
    for node in made:
        if node.alive():
            assert node.stop() == 0, node.log.read_text()[-3000:]


def _open_refused(alice: NodeProc, bob: NodeProc, *extra: str) -> str:
    """``channel open`` that the peer refuses: its one error line, as the user sees it."""
    result = cli(
        "channel",
        "open",
        "--data-dir",
        str(alice.dir),
        "--peer",
        bob.address,
        "--peer-id",
        bob.node_id,
        "--deposit",
        "10",
        *extra,
        "--json",
    )
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("bfs-smr: error: the peer refused the channel: "), lines
    return lines[0]


def _balance(l1: str, node: NodeProc) -> int:
    balance: int = ok("l1", "balance", "--l1", l1, node.node_id)["balance"]
    return balance


# -- defect 3: a stranger locked a victim's funds for millennia --------------------------


def test_a_node_refuses_channels_outside_its_policy_and_says_why(
    nodes: list[NodeProc], l1: str
) -> None:
    alice, bob, _ = nodes
    # The attacker's node asks for a window of 10^12 s (its own limit raised to allow it).
    huge = str(10**12)
    alice.extra = ("--window", huge, "--max-window", huge)
    alice.start()
    bob.start()  # every policy option at its default
    refused = _open_refused(alice, bob, "--peer-deposit", "1000")
    assert f"the challenge window of {huge} s is over its limit of 2592000 s" in refused
    assert "(--max-window)" in refused
    alice.stop()
    alice.extra = ()
    alice.start()
    refused = _open_refused(alice, bob, "--peer-deposit", "1000")
    assert "it deposits at most 0 into a channel another node opens, not 1000" in refused
    assert "(--max-inbound-deposit)" in refused
    refused = _open_refused(alice, bob, "--app", "counter")
    assert "it does not run 'counter' channels others open (it accepts: payments" in refused
    # Nothing was stored or locked for any of them; bob logged each refusal.
    assert ok("channel", "list", "--data-dir", str(bob.dir)) == {"channels": []}
    assert _balance(l1, bob) == 1000
    assert len([e for e in bob.log_events() if e.get("event") == "channel refused"]) == 3
    # Within the defaults a payments channel opens: bob deposits nothing and can only be paid.
    channel = _open(alice, bob)
    assert ok("channel", "show", "--data-dir", str(bob.dir), channel)["phase"] == "open"
    # Raised limits let a game with equal stakes in.
    bob.stop()
    bob.extra = ("--max-inbound-deposit", "10", "--accept-app", "tictactoe")
    bob.start()
    game = _open(alice, bob, "--app", "tictactoe", "--peer-deposit", "10", deposit=10)
    assert ok("channel", "show", "--data-dir", str(bob.dir), game)["app"] == "tictactoe"
    assert _balance(l1, bob) == 990


def test_with_an_allow_list_only_listed_peers_open_channels(nodes: list[NodeProc], l1: str) -> None:
    alice, bob, carol = nodes
    # Bob lists carol only; he dials alice himself, so alice may connect, not open.
    bob.extra = ("--allow-peer", carol.node_id)
    for node in nodes:
        node.start()
    _open(bob, alice)
    refused = _open_refused(alice, bob)
    assert "it takes channels only from the peers it lists (--allow-peer)" in refused
    _open(carol, bob)
    assert len(ok("channel", "list", "--data-dir", str(bob.dir))["channels"]) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--accept-app", "no-such-app"), "unknown app 'no-such-app'"),
        (("--window", "100", "--max-window", "99"), "--window 100 is over --max-window 99"),
        (("--max-window", "1"), "is over --max-window (1 s)"),  # the L1's own window is 2
        (("--max-window", "0"), "must be at least 1"),
        (("--max-inbound-deposit", "-1"), "is negative"),
    ],
)
def test_bad_policy_options_are_one_line_and_exit_2(
    nodes: list[NodeProc], l1: str, args: tuple[str, ...], needle: str
) -> None:
    alice = nodes[0]
    result = cli(
        "node",
        "--data-dir",
        str(alice.dir),
        "--listen",
        "127.0.0.1:0",
        "--l1",
        l1,
        *args,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and needle in lines[0], result.stderr


# -- defect 11: an empty store was taken as a new one ------------------------------------


def _start_fails(node: NodeProc, l1: str) -> str:
    result = cli(
        "node", "--data-dir", str(node.dir), "--listen", "127.0.0.1:0", "--l1", l1, timeout=60
    )
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_a_node_refuses_an_empty_or_missing_store(nodes: list[NodeProc], l1: str) -> None:
    alice, bob, _ = nodes
    alice.start()
    bob.start()
    channel = _open(alice, bob)
    bob.stop()
    store = bob.dir / "channels.sqlite3"
    assert store.stat().st_size > 0
    store.write_bytes(b"")  # truncated to zero bytes (a full disk, a bad copy …)
    line = _start_fails(bob, l1)
    assert f"{store}: empty (0 bytes)" in line and "restore it from a backup" in line
    assert store.stat().st_size == 0  # not initialised behind the operator's back
    store.unlink()
    assert f"{store}: missing" in _start_fails(bob, l1)
    assert not store.exists()
    # The operator decides to go on without the channel: a deliberate new store.
    made = ok("init", "--data-dir", str(bob.dir), "--new-store")
    assert made == {"node_id": bob.node_id, "new_store": True}
    refused = cli("init", "--data-dir", str(bob.dir), "--new-store", "--json")
    assert refused.code == 2 and "exists" in refused.stderr
    bob.start()
    assert ok("channel", "list", "--data-dir", str(bob.dir)) == {"channels": []}
    assert ok("channel", "show", "--data-dir", str(alice.dir), channel)["phase"] == "open"


def test_the_store_never_initialises_an_existing_file(tmp_path: Path) -> None:
    import sqlite3

    from bfs_smr.runtime.store import Store, StoreError

    with pytest.raises(StoreError, match="missing"):
        Store(tmp_path / "a", create=False)
    assert not (tmp_path / "a" / "channels.sqlite3").exists()
    Store(tmp_path / "a").close()  # made, whole
    Store(tmp_path / "a", create=False).close()  # and opened again
    empty = tmp_path / "b" / "channels.sqlite3"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    for create in (True, False):
        with pytest.raises(StoreError, match=r"empty \(0 bytes\)"):
            Store(tmp_path / "b", create=create)
    assert empty.stat().st_size == 0
    other = tmp_path / "c" / "channels.sqlite3"
    other.parent.mkdir()
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE something (x)")
    with pytest.raises(StoreError, match="not a bfs-smr store"):
        Store(tmp_path / "c")


def test_init_makes_the_store(tmp_path: Path) -> None:
    made = ok("init", "--data-dir", str(tmp_path / "n"))
    assert (tmp_path / "n" / "channels.sqlite3").stat().st_size > 0
    assert len(made["node_id"]) == 64


# -- defect 13: idle control connections exhausted the node's file descriptors ---------


def _fds(node: NodeProc) -> int:
    assert node.proc is not None
    return len(list(Path(f"/proc/{node.proc.pid}/fd").iterdir()))


def test_idle_control_connections_cannot_lock_the_owner_out(nodes: list[NodeProc]) -> None:
    alice = nodes[0]
    alice.extra = ("--max-control-connections", "50")
    # The node gets 256 descriptors: 300 idle connections would take them all.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        alice.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    port = json.loads((alice.dir / "control.json").read_text())["port"]
    assert alice.call("status")["node_id"] == alice.node_id
    before = _fds(alice)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    try:
        # The owner's command answers (its connection came after all 300) …
        assert alice.call("status", timeout=20)["node_id"] == alice.node_id
        # … and the node holds at most the cap of them.
        assert _fds(alice) <= before + 50 + 10  # (+ what the L1 and store open briefly)
        # A client that sends part of a request gets a reason once its time is up.
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
            slow.sendall(bytes([0, 0, 1, 0]) + b"\xa3")
            reply = json.loads(slow.makefile().readline())
        assert reply == {"ok": False, "error": "no whole request within 5 s"}
        # A request over the bound is refused from its length alone.
        with socket.create_connection(("127.0.0.1", port), timeout=60) as long:
            long.sendall((200 * 1024).to_bytes(4, "big") + b"x" * 1024)
            reply = json.loads(long.makefile().readline())
        assert reply == {
            "ok": False,
            "error": "a request of 204800 bytes is over the limit of 65536",
        }
        # A request goes through the hardened decoder, secret or not (issue 11, defect 1:
        # shared references), and is refused at once.
        bomb = shared_reference_bomb(40)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as dag:
            dag.sendall(len(bomb).to_bytes(4, "big") + bomb)
            reply = json.loads(dag.makefile().readline())
        assert reply == {"ok": False, "error": "bad control request: unsupported CBOR item: a tag"}
    finally:
        for s in idle:
            s.close()
    assert alice.alive()


def test_links_from_strangers_are_capped_and_peers_with_channels_keep_theirs(
    nodes: list[NodeProc],
) -> None:
    import asyncio
    import os

    from bfs_smr import Ed25519, Signer
    from bfs_smr.runtime import transport

    alice, bob, _ = nodes
    bob.extra = ("--max-stranger-links", "5")
    alice.start()
    bob.start()
    channel = _open(alice, bob)
    # Alice counts as a peer with a channel once bob has seen it funded on L1.
    deadline = time.monotonic() + 30
    while bob.call("show", channel=channel)["l1"] != "open":
        assert time.monotonic() < deadline, "bob never saw the channel open on L1"
        time.sleep(0.05)
    bob_id = bytes.fromhex(bob.node_id)

    async def flood() -> tuple[list[str], list[bool], list[str]]:
        # 20 fresh identities, each completing the handshake and then saying nothing.
        links = []
        for _ in range(20):
            me = Signer(Ed25519(), os.urandom(32))
            links.append(await transport.dial("127.0.0.1", bob.port, me, bob_id, timeout=10))
        evicted = [await asyncio.wait_for(asyncio.shield(k.closed), 30) for k in links[:15]]
        up = [not k.closed.done() for k in links[15:]]
        linked = (await asyncio.to_thread(bob.call, "status"))["links"]
        for link in links:
            link.close("done")
        return evicted, up, linked

    evicted, up, linked = asyncio.run(flood())
    # The oldest 15 were evicted with a reason; the newest 5 are up, beside alice's link.
    assert all("too many links from peers without a channel (5)" in r for r in evicted), evicted
    assert up == [True] * 5
    assert len(linked) == 6 and alice.node_id in linked
    # Alice, who holds a channel with bob, was never counted: her link stayed up throughout.
    assert alice.node_id in bob.call("status")["links"]
    assert ok("channel", "pay", "--data-dir", str(alice.dir), channel, "3")["seq"] == 1
    downs = [e for e in bob.log_events() if e.get("event") == "link down"]
    assert not [e for e in downs if e.get("peer") == alice.node_id[:16]], downs


# -- defect 14: a busy port, and failures nobody waited for ---------------------------


def test_a_listen_port_in_use_is_one_line_and_exit_2(nodes: list[NodeProc], l1: str) -> None:
    alice, bob, _ = nodes
    alice.start()
    result = cli(
        "node", "--data-dir", str(bob.dir), "--listen", alice.address, "--l1", l1, timeout=60
    )
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bfs-smr: error: cannot listen on {alice.address}: "), lines
    assert not (bob.dir / "control.json").exists()


def test_a_command_failing_after_its_caller_left_leaves_no_stray_error(
    nodes: list[NodeProc],
) -> None:
    alice, bob, _ = nodes
    alice.start()
    bob.start()
    channel = _open(alice, bob)
    bob.stop()
    # The payment waits for bob's signature; the caller gives up, the command stays pending …
    late = cli("channel", "pay", "--data-dir", str(alice.dir), channel, "5", "--timeout", "1")
    assert late.code == 2 and "stays pending" in late.stderr
    # … and fails when the node shuts down: reported once, not as an unretrieved exception.
    assert alice.stop() == 0
    text = alice.log.read_text()
    assert "never retrieved" not in text, text[-3000:]


def test_an_open_whose_dial_outlives_the_caller_leaves_no_stray_error(
    nodes: list[NodeProc],
) -> None:
    alice, bob, _ = nodes
    alice.start()
    # A port that takes the connection and never answers the handshake.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        late = cli(
            "channel",
            "open",
            "--data-dir",
            str(alice.dir),
            "--peer",
            f"127.0.0.1:{port}",
            "--peer-id",
            bob.node_id,
            "--deposit",
            "5",
            "--timeout",
            "1",
        )
        assert late.code == 2 and "cannot reach the peer" in late.stderr, late.stderr
        # The dial goes on to its own 5 s limit, and fails with nobody waiting for it.
        alice.wait_log("dial failed")
    assert alice.stop() == 0
    text = alice.log.read_text()
    assert "never retrieved" not in text, text[-3000:]
