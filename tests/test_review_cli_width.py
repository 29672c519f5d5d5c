"""Review of issue 12: a new user following README.md in an 80-column terminal.

``bfs-smr init`` prints the node id the next steps need in full (``l1 fund ALICE_ID``,
``channel open --peer-id BOB_ID``), but its table cut the 64 hex digits to fit 80 columns
("44f0d2…5df1d…"), so the walkthrough could not be followed as written. Values are folded
onto further lines instead, never cut. (Issue 15 went further: ids are printed whole on
one line, outside any table, so the check is now that the id is on one line.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bfs_smr.cli import main
from bfs_smr.runtime.store._datadir import DataDir


def _on_one_line(value: str, out: str) -> bool:
    return any(value in line for line in out.splitlines())


def test_init_shows_the_whole_node_id_in_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["init", "--data-dir", str(tmp_path / "alice")]) == 0
    shown = capsys.readouterr().out
    node_id = DataDir(tmp_path / "alice").identity().public_key.hex()
    assert max(len(line) for line in shown.splitlines()) <= 80, shown
    assert "…" not in shown, shown
    assert _on_one_line(node_id, shown), shown
