"""What ``channel show`` / ``channel list`` report, between real node processes: the
app's view, deadlines, pending commands, the outcome the L1 pays during a dispute, and
settled channels left out of the list; and a cooperative close the app refuses fails at
once, with the reason, on either side (issue 15)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bfs_smr.runtime.node._control import ControlError
from tests.nodeproc import NodeProc, cli, local_l1, ok

GAME = {"app": "tictactoe", "deposit": 10, "peer_deposit": 10}


def _open(alice: NodeProc, bob: NodeProc, **how: object) -> str:
    """Open through the control endpoint (faster than a CLI process; the CLI's open is
    tested elsewhere)."""
    opened = alice.call("open", peer=bob.address, peer_id=bob.node_id, **how)
    channel: str = opened["channel"]
    return channel


def _until(check, what: str, tries: int = 300):  # type: ignore[no-untyped-def]
    for _ in range(tries):
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


@pytest.fixture
def pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    l1 = local_l1(tmp_path, 120)  # no window ends during the test
    alice = NodeProc(tmp_path / "alice", l1)
    bob = NodeProc(
        tmp_path / "bob",
        l1,
        extra=("--accept-app", "tictactoe", "--accept-app", "payments",
               "--max-inbound-deposit", "10"),
    )  # fmt: skip
    for who in (alice, bob):
        ok("l1", "fund", "--l1", l1, who.node_id, "1000")
        who.start()
    yield alice, bob
    for who in (alice, bob):
        if who.alive():
            who.stop()


def test_show_list_and_the_outcome_during_a_dispute(pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob = pair
    game = _open(alice, bob, **GAME)
    # A fresh game: X (the opener) to move, so it pays the pot to O if it closed now.
    shown = alice.call("show", channel=game)
    assert shown["view"]["board"] == [""] * 9
    assert (shown["view"]["you"], shown["view"]["turn"]) == ("X", "you")
    assert shown["outcome"] == {alice.node_id: 0, bob.node_id: 20}
    assert (shown["deadline"], shown["pending"]) == (None, 0)
    # Neither side may close a game in progress cooperatively: both hear so at once.
    for who in (bob, alice):
        done = cli("channel", "close", "--data-dir", str(who.dir), game, timeout=60)
        assert done.code == 2, done.stderr
        assert "does not allow a cooperative close" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    alice.call("send", channel=game, command={"cell": 4})
    view = bob.call("show", channel=game)["view"]
    assert view["board"][4] == "X" and (view["you"], view["turn"]) == ("O", "you")
    # Bob closes alone where he is to move, then answers on L1 by a forced move: the L1
    # would now pay Bob, whatever the update both signed (Alice 20) says.
    with pytest.raises(ControlError, match="not paid out"):
        bob.call("close", channel=game, unilateral=True, timeout=1)
    forced = bob.call("send", channel=game, command={"cell": 0})
    assert forced["forced"] is True
    for who in (bob, alice):
        shown = _until(
            lambda who=who: (s := who.call("show", channel=game))["forced_seq"] == 2 and s,
            "the forced move shown",
        )
        assert shown["phase"] == "closing"
        assert shown["outcome"] == {alice.node_id: 0, bob.node_id: 20}
        assert shown["committed_outcome"] == {alice.node_id: 20, bob.node_id: 0}  # seq 1
        assert shown["deadline"] == forced["deadline"]
        assert shown["view"]["board"][:5] == ["O", "", "", "", "X"]
    assert alice.call("show", channel=game)["view"]["turn"] == "you"
    # A settled payments channel leaves the list (--all shows it); the game stays.
    pay = _open(alice, bob, deposit=100)
    alice.call("close", channel=pay)
    listed = [c["channel"] for c in alice.call("list")["channels"]]
    assert listed == [game]
    every = ok("channel", "list", "--data-dir", str(alice.dir), "--all")["channels"]
    assert {c["channel"] for c in every} == {game, pay}
    settled = next(c for c in every if c["channel"] == pay)
    assert settled["outcome"] == settled["payouts"] == {alice.node_id: 100, bob.node_id: 0}
    # A payment the peer never counter-signs stays pending.
    other = _open(alice, bob, deposit=100)
    bob.stop()
    with pytest.raises(ControlError, match="stays pending"):
        alice.call("pay", channel=other, amount=5, timeout=1)
    assert alice.call("show", channel=other)["pending"] == 1
