"""Tic-tac-toe between two ``bfs-smr node`` processes on a chain, played from the CLI.

Each story runs on the Vyper adjudicator on anvil (``--l1 evm:URL``, anvil from npm, a
block a second so block time follows the clock; tests/test_node.py tells the same
stories on the local L1 file, and the ``local`` parameter here is kept for debugging,
``BFS_SMR_GAMES_L1=local,evm``): a game
played to the end; a game against an opponent whose node dies when the honest player
needs its counter-signature (the honest node closes, forces its move, and takes the pot
when the window passes unanswered); and two cheats by an opponent who stops its node and
uses its own key on L1 through the Python API: a stale close, and a move forced at a seq
both had signed (a doubly-signed update beats a move forced at its seq, docs/design.md
§5). Every story ends with the honest player's L1 balance checked: its deposit back with
what the game paid it, less, on the EVM, the gas its own transactions cost.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bfs_smr import CommandEntry, SignedUpdate, Update
from bfs_smr.plugins import connect_l1, load_app, load_l1
from bfs_smr.runtime.store import Store
from bfs_smr.runtime.store._datadir import DataDir
from tests.nodeproc import NodeProc, cli, local_l1, ok, watch_secret_of
from tests.nodeproc import open_channel as _open

#: The challenge window, in seconds of L1 time: long enough for a node to see a close and
#: answer it (refute, then force) on a loaded machine; short enough that the tests take
#: seconds.
WINDOW = 6
STAKE = 10
#: What each node is given on L1: the stake, and on the EVM the gas (in wei).
FUND = {"local": 1_000, "evm": 10**18}
#: What Bob must allow for Alice's games with equal stakes.
GAMES = ("--accept-app", "tictactoe", "--max-inbound-deposit", str(STAKE))


def _evm_ready() -> str | None:
    """Why the EVM case cannot run here, or None."""
    try:
        from bfs_smr.adapters.evm import EvmAdapter
    except ImportError:
        return "the evm extra is not installed"
    if not EvmAdapter.supports_force_move:
        return "the EVM adjudicator has no force moves yet"
    return None


@pytest.fixture(scope="module")
def anvil_spec() -> Iterator[str]:
    from conftest import anvil

    with anvil(block_time=1) as node:
        spec = f"evm:{node.url}"
        made = ok("l1", "init", "--l1", spec)  # the adjudicator and the apps' rules
        assert set(made["rules"]) >= {"tictactoe/1"}, made
        yield spec


@pytest.fixture(params=os.environ.get("BFS_SMR_GAMES_L1", "evm").split(","))
def l1(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return local_l1(tmp_path, WINDOW)
    why = _evm_ready()
    if why:
        pytest.skip(why)
    spec: str = request.getfixturevalue("anvil_spec")
    return spec


def _kind(l1: str) -> str:
    return l1.split(":", 1)[0]


class Player:
    """A node and its account on the L1, with what it spent on gas (the EVM's)."""

    def __init__(self, node: NodeProc, l1: str) -> None:
        self.node = node
        self.l1 = l1
        if _kind(l1) == "evm":
            from bfs_smr.adapters.evm import Secp256k1

            key = DataDir(node.dir).l1_key()
            self.account = "0x" + Secp256k1().public_key(key).hex()
        else:
            self.account = node.node_id

    def balance(self) -> int:
        """The account's L1 balance, as ``bfs-smr l1 balance`` reads it (in this process)."""
        plugin = load_l1(self.l1)
        return plugin.balance(plugin.parse_account(self.account))

    def fees_since(self, block: int) -> int:
        """Wei this account paid for gas in blocks after ``block`` (0 on the local L1)."""
        if _kind(self.l1) != "evm":
            return 0
        w3 = _web3(self.l1)
        paid = 0
        for number in range(block + 1, w3.eth.block_number + 1):
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if str(tx["from"]).lower() == self.account:
                    receipt = w3.eth.get_transaction_receipt(tx["hash"])
                    paid += receipt["gasUsed"] * receipt["effectiveGasPrice"]
        return paid


def _web3(l1: str) -> Any:
    from web3 import HTTPProvider, Web3

    return Web3(HTTPProvider(l1.removeprefix("evm:").split("#")[0]))


def _block(l1: str) -> int:
    return int(_web3(l1).eth.block_number) if _kind(l1) == "evm" else 0


@pytest.fixture
def players(tmp_path: Path, l1: str) -> Iterator[tuple[Player, Player]]:
    extra = ("--window", str(WINDOW)) if _kind(l1) == "evm" else ()
    # Both at once (``bfs-smr init``, then the node): each process takes seconds to start.
    with ThreadPoolExecutor(2) as pool:
        alice, bob = pool.map(
            lambda who: NodeProc(tmp_path / who[0], l1, extra=who[1]),
            [("alice", extra), ("bob", (*extra, *GAMES))],
        )
        made = (Player(alice, l1), Player(bob, l1))
        plugin = load_l1(l1)  # as ``bfs-smr l1 fund`` does (tests/test_node_evm.py runs it)
        for player in made:
            plugin.fund(plugin.parse_account(player.account), FUND[_kind(l1)])
        list(pool.map(NodeProc.start, (alice, bob)))
    yield made
    for player in made:
        if player.node.alive():
            assert player.node.stop() == 0, player.node.log.read_text()[-3000:]


def _game(alice: Player, bob: Player) -> str:
    channel = _open(
        alice.node, bob.node, "--app", "tictactoe", "--peer-deposit", str(STAKE), deposit=STAKE
    )
    shown = ok("channel", "show", "--data-dir", str(bob.node.dir), channel)
    assert shown["app"] == "tictactoe" and shown["to_move"] == alice.node.node_id
    return channel


def _move(player: Player, channel: str, cell: int) -> dict[str, Any]:
    result: dict[str, Any] = ok(
        "channel", "send", "--data-dir", str(player.node.dir), channel, json.dumps({"cell": cell})
    )
    return result


def _play(alice: Player, bob: Player, channel: str, cells: list[int], *, cli: bool) -> None:
    """Alice and Bob move in turn; each move as ``channel send`` (``cli``), or through the
    control endpoint that command uses (quicker: no process to start)."""
    for i, cell in enumerate(cells):
        player = (alice, bob)[i % 2]
        if cli:
            _move(player, channel, cell)
        else:
            player.node.call("send", channel=channel, command={"cell": cell}, count=1)


def _cheat(player: Player, channel: str) -> tuple[Any, Any, list[SignedUpdate]]:
    """The stopped ``player``'s own L1 connection (its key, as its node had it), the
    channel's parameters and its log of doubly-signed updates, read from its store."""
    data = DataDir(player.node.dir)
    conn = connect_l1(player.l1, data.identity(), data.l1_key, WINDOW)
    cid = bytes.fromhex(channel)
    with Store(player.node.dir) as store:
        params = store.params(cid)
        log = store.log_range(cid, 0, store.log_size(cid) - 1)
    conn.adapter.track(params)
    return conn, params, log


def test_a_game_played_to_the_end_pays_the_winner(players: tuple[Player, Player]) -> None:
    alice, bob = players
    before = (alice.balance(), bob.balance())
    block = _block(alice.l1)
    channel = _game(alice, bob)
    # X takes the top row while O plays the middle one.
    _play(alice, bob, channel, [0, 3, 1, 4, 2], cli=True)
    shown = ok("channel", "show", "--data-dir", str(bob.node.dir), channel)
    assert shown["to_move"] is None and shown["state"][0] == [1, 1, 1, 2, 2, 0, 0, 0, 0]
    closed = ok("channel", "close", "--data-dir", str(bob.node.dir), channel)
    pot = 2 * STAKE
    assert closed["payouts"] == {alice.node.node_id: pot, bob.node.node_id: 0}
    assert alice.balance() == before[0] - STAKE + pot - alice.fees_since(block)
    assert bob.balance() == before[1] - STAKE - bob.fees_since(block)


def test_a_silent_opponent_loses_to_forced_moves(players: tuple[Player, Player]) -> None:
    alice, bob = players
    before = (alice.balance(), bob.balance())
    block = _block(alice.l1)
    channel = _game(alice, bob)
    _play(alice, bob, channel, [0, 4], cli=False)
    bob.node.kill()  # Bob's node dies: Alice's next move is never counter-signed
    pending = cli(
        "channel", "send", "--data-dir", str(alice.node.dir), channel, '{"cell": 8}',
        "--json", "--timeout", "1",
    )  # fmt: skip
    assert pending.code == 2 and "pending" in pending.stderr, pending.stderr
    # Alice is to move in the newest doubly-signed update: closing on it alone would make
    # her forfeit. Her node registers it and forces the move she signed (cell 8), then Bob,
    # to move on L1, lets the window pass and forfeits the pot.
    closed = ok("channel", "close", "--data-dir", str(alice.node.dir), channel, "--unilateral")
    pot = 2 * STAKE
    assert closed["payouts"] == {alice.node.node_id: pot, bob.node.node_id: 0}
    assert alice.node.wait_log("forcing a move on L1")["seq"] == 3
    assert alice.balance() == before[0] - STAKE + pot - alice.fees_since(block)
    assert bob.balance() == before[1] - STAKE - bob.fees_since(block)


#: Alice (X) has 0, 1 and 8, Bob (O) has 4 and 5, and it is Bob's move: he wins with 3.
#: Alice missed cell 2 at her third move.
CHEATED = [0, 4, 1, 5, 8]


class Cheat:
    """The game ``CHEATED`` played to seq 5; Alice's node stopped, her key and log at hand
    to cheat with; Bob's balance and the block before it all, to check what he ends with."""

    def __init__(self, alice: Player, bob: Player) -> None:
        self.alice, self.bob = alice, bob
        self.before = bob.balance()
        self.block = _block(bob.l1)
        self.channel = _game(alice, bob)
        _play(alice, bob, self.channel, CHEATED, cli=False)
        alice.node.stop()
        self.conn, self.params, self.log = _cheat(alice, self.channel)
        self.reveal = watch_secret_of(alice.node, bob.node, self.params)  # a close needs it

    def bob_refutes_and_wins(self, registered_seq: int) -> None:
        """Bob's node refutes the close with seq 5, forces his winning move (cell 3) and
        is paid the pot, less the gas he spent."""
        bob = self.bob
        refuted = bob.node.wait_log("stale close on L1: refuting", timeout=WINDOW * 5)
        assert refuted["registered_seq"] == registered_seq and refuted["our_seq"] == 5, refuted
        bob.node.wait_log("L1 refute")
        # Now the newest position stands on L1 and it is Bob's move: his node forces it.
        answer = _move(bob, self.channel, 3)
        assert answer["forced"] is True and answer["seq"] == 6, answer
        closed = bob.node.call("close", channel=self.channel)
        pot = 2 * STAKE
        assert closed["payouts"] == {self.alice.node.node_id: 0, bob.node.node_id: pot}, closed
        assert bob.balance() == self.before - STAKE + pot - bob.fees_since(self.block)


def test_a_stale_close_is_refuted_and_the_honest_player_wins(
    players: tuple[Player, Player],
) -> None:
    cheat = Cheat(*players)
    # Alice cheats: she closes on L1 with seq 1 (her first move, doubly signed), where
    # Bob is to move and would forfeit if the window passed.
    stale = cheat.log[1]
    assert stale.seq == 1
    cheat.conn.adapter.unilateral_close(stale, cheat.reveal)
    cheat.bob_refutes_and_wins(registered_seq=1)


def test_a_move_forced_at_a_signed_seq_loses_to_the_signed_update(
    players: tuple[Player, Player],
) -> None:
    cheat = Cheat(*players)
    bob, conn, params, log = cheat.bob, cheat.conn, cheat.params, cheat.log
    # Alice cheats: she registers seq 4 and forces, at seq 5, the move she wishes she had
    # made (cell 2, three in a row) where both signed cell 8. Bob's node is paused
    # meanwhile, so the first it sees is the forced update.
    registered, signed = log[4], log[5]
    app = load_app("tictactoe")
    state = app.initial_state(params)
    for actor, cell in zip((0, 1, 0, 1), CHEATED, strict=False):
        state = app.apply(state, {"cell": cell}, actor)
    won = app.apply(state, {"cell": 2}, 0)
    fmt = conn.adapter.format
    other = Update(
        channel_id=params.channel_id,
        seq=5,
        prev_hash=registered.update.entry_hash(),
        app_id=params.app_id,
        commands=(CommandEntry(0, signed.update.commands[0].ref, {"cell": 2}),),
        state_hash=fmt.state_hash(app, won),
        outcome=app.checked_outcome(won, params),
    )
    forged = SignedUpdate(other, (conn.signer.sign(fmt.digest(other, other.body())), None))
    assert bob.node.proc is not None
    bob.node.proc.send_signal(signal.SIGSTOP)
    try:
        conn.adapter.unilateral_close(registered, cheat.reveal)
        conn.adapter.force_move(fmt.encode_state(app, state), forged, registered)
    finally:
        bob.node.proc.send_signal(signal.SIGCONT)
    # A doubly-signed update beats a move forced at its seq: Bob's node answers with the
    # update both signed (cell 8), and it is his move again.
    cheat.bob_refutes_and_wins(registered_seq=5)
    assert not [e for e in bob.node.log_events() if e.get("event") == "adopted a move forced on L1"]


def test_the_dispute_demo_on_the_evm() -> None:
    """On the in-process chain (``--l1 evm:URL`` is the same code on an RPC node: only
    its refusal of a URL where nothing answers is tested, in tests/test_cli.py)."""
    why = _evm_ready()
    if why:
        pytest.skip(why)
    result = cli("demo", "dispute", "--l1", "evm", "--seed", "2", "--json")
    assert result.code == 0, result.stderr
    told = result.json
    assert told["l1"] == "evm"
    assert told["stale_close"]["refuted"] is True
    assert told["stale_close"]["payouts"] == {"alice": 650, "bob": 350}
    forced = told["force_move"]
    assert forced["forced_seq"] == forced["moves_signed_by_both"] + 1
    assert forced["payouts"] == {"alice": 200, "bob": 0}
    story = " ".join(told["story"])
    assert "on the EVM adjudicator" in story and "Alice cheated" in story
    assert "so he forfeits: L1 paid Alice 200, Bob 0." in story
