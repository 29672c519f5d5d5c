"""What a new operator ran into on the command line (issue 15): ids cut in an 80-column
terminal, no ``--version``, ``--data-dir``/``--l1`` repeated on every command, a
tic-tac-toe state printed as raw lists, no progress while a close waits, ``l1 init``
erroring on an existing local L1, errors as tracebacks."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from bfs_smr import __version__, cli
from bfs_smr._build import build_description
from bfs_smr.cli import main
from bfs_smr.cli._show import countdown, print_human, show_channel, utc, wait_with_progress
from bfs_smr.runtime.store._datadir import DataDir

ME, PEER, CH = "a1" * 32, "b2" * 32, "c3" * 32


def _game(**extra):  # type: ignore[no-untyped-def]
    ch = {
        "channel": CH,
        "app": "tictactoe",
        "seq": 3,
        "phase": "closing",
        "l1": "closing",
        "peer": PEER,
        "outcome": {ME: 0, PEER: 20},
        "state": [[1, 2, 0, 0, 1, 0, 0, 0, 2], 1, 10, 10],
        "view": {
            "board": ["X", "O", "", "", "X", "", "", "", "O"],
            "you": "X",
            "turn": "peer",
            "winner": None,
            "stakes": {"you": 10, "peer": 10},
        },
        "to_move": PEER,
        "forced_seq": 3,
        "deadline": 1_900_000_000,
        "pending": 2,
        "payouts": None,
    }
    return {**ch, **extra}


def _lines(out: str) -> list[str]:
    return out.splitlines()


def test_show_draws_the_board_whose_move_the_deadline_and_pending() -> None:
    out = io.StringIO()
    show_channel(_game(), out)
    text = out.getvalue()
    assert all(len(line) <= 80 for line in _lines(text)), text
    assert any(CH in line for line in _lines(text)) and any(PEER in line for line in _lines(text))
    assert "  X | O | 2" in text and "  6 | 7 | O" in text  # empty cells show their number
    assert "the peer's move" in text and "you play     X" in text
    assert "you 0, peer 20 (if the window ended now)" in text
    assert "2030-03-17 17:46:40 UTC" in text  # the deadline as a UTC date
    assert "2 commands not yet committed" in text
    assert "move forced on L1 at seq 3" in text
    won = io.StringIO()
    show_channel(_game(view={**_game()["view"], "turn": None, "winner": "you"}), won)
    assert "you won" in won.getvalue()


def test_show_payments_in_words() -> None:
    out = io.StringIO()
    view = {"mine": 475, "theirs": 25}
    show_channel(_game(app="payments", view=view, forced_seq=None, deadline=None, pending=0), out)
    assert "you 475, peer 25" in out.getvalue() and "deadline" not in out.getvalue()


def test_countdown_and_utc() -> None:
    assert utc(0) == "1970-01-01 00:00:00 UTC"
    assert countdown(100, now=100) == "passed"
    assert countdown(112, now=100) == "in 12 s"
    assert countdown(100 + 252, now=100) == "in 4 min 12 s"
    assert countdown(100 + 7_260, now=100) == "in 2 h 1 min"
    assert countdown(100 + 3 * 86_400 + 7_260, now=100) == "in 3 d 2 h"


def test_list_and_close_print_whole_ids_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_human("channel", {"channels": [_game(), _game(channel="d4" * 32)]})
    print_human("channel", {"channel": CH, "peer": PEER, "payouts": {ME: 0, PEER: 20}})
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in _lines(out)), out
    for cid in (CH, "d4" * 32, ME, PEER):
        assert any(cid in line for line in _lines(out)), (cid, out)
    assert f"  you  {ME}  0" in out and f"  peer {PEER}  20" in out
    print_human("channel", {"channel": CH, "seq": 4, "forced": True, "deadline": 1_900_000_000})
    assert "deadline     2030-03-17 17:46:40 UTC (in " in capsys.readouterr().out


def test_close_progress_off_a_terminal_says_where_the_close_stands() -> None:
    looked = threading.Event()
    err = io.StringIO()

    def run():  # type: ignore[no-untyped-def]
        looked.wait(60)
        return {"channel": CH, "payouts": {}}

    def look():  # type: ignore[no-untyped-def]
        looked.set()
        return _game(forced_seq=None)

    assert wait_with_progress(run, look, err=err)["channel"] == CH
    assert "closing on L1: the window ends 2030-03-17 17:46:40 UTC" in err.getvalue()

    def fail():  # type: ignore[no-untyped-def]
        raise ValueError("the close failed")

    with pytest.raises(ValueError, match="the close failed"):
        wait_with_progress(fail, look, err=io.StringIO())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    # the version, and which build of the core runs (README.md, "A compiled build")
    assert capsys.readouterr().out.strip() == f"bfs-smr {__version__} ({build_description()})"


def test_help_states_the_channel_prefix_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["channel", "show", "--help"]) == 0
    assert "unique prefix of it of 8 or more hex digits" in " ".join(
        capsys.readouterr().out.split()
    )


def test_environment_stands_for_data_dir_and_l1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BFS_SMR_DATA_DIR", raising=False)
    monkeypatch.delenv("BFS_SMR_L1", raising=False)
    assert main(["init"]) == 2
    err = capsys.readouterr().err
    assert "--data-dir (or set BFS_SMR_DATA_DIR)" in err and len(_lines(err)) == 1
    monkeypatch.setenv("BFS_SMR_DATA_DIR", str(tmp_path / "alice"))
    monkeypatch.setenv("BFS_SMR_L1", f"local:{tmp_path / 'l1.sqlite3'}")
    assert main(["init", "--json"]) == 0
    node_id = DataDir(tmp_path / "alice").identity().public_key.hex()
    assert node_id in capsys.readouterr().out
    assert main(["l1", "init", "--window", "9", "--json"]) == 0
    assert main(["l1", "fund", node_id, "7", "--json"]) == 0
    assert '"balance": 7' in capsys.readouterr().out


def test_l1_init_on_an_existing_local_l1_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"local:{tmp_path / 'l1.sqlite3'}"
    assert main(["l1", "init", "--l1", spec, "--window", "9", "--json"]) == 0
    assert '"created": true' in capsys.readouterr().out
    assert main(["l1", "init", "--l1", spec, "--json"]) == 0
    assert '"created": false' in capsys.readouterr().out
    assert main(["l1", "init", "--l1", spec, "--window", "10"]) == 2
    err = capsys.readouterr().err
    assert "exists already, with a 9 s window" in err and len(_lines(err)) == 1


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        ["init", "--data-dir", str(blocker / "node")],  # a path under a file
        ["channel", "list", "--data-dir", str(tmp_path / "nothing")],  # no node there
        ["l1", "balance", "--l1", f"local:{tmp_path / 'none.sqlite3'}", ME],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(_lines(err)) == 1 and err.startswith("bfs-smr: error: "), (argv, err)


def test_even_a_bug_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom\nsecond line")

    monkeypatch.delenv("BFS_SMR_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_run", broken)
    assert main(["demo", "counter"]) == 2
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "RuntimeError: boom second line" in err, err


def test_close_progress_on_a_terminal_is_a_live_status_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    looked = threading.Event()
    err = Terminal()

    def run():  # type: ignore[no-untyped-def]
        looked.wait(60)
        return {"channel": CH}

    def look():  # type: ignore[no-untyped-def]
        looked.set()
        return _game()

    assert wait_with_progress(run, look, err=err) == {"channel": CH}
    assert "a dispute on L1: the window ends" in err.getvalue()
