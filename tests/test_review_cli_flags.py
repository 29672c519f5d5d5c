"""Review of issue 12: a refused node flag is named as the flag the user typed.

Before NodeConfig, ``--max-in-flight 0`` was refused as "--max-in-flight and --max-batch
must be at least 1"; after it, the ChannelLimits field name came out instead
("max_in_flight must be an integer of at least 1, not 0").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bfs_smr.cli import main


@pytest.mark.parametrize("flag", ["--max-in-flight", "--max-batch"])
def test_a_zero_limit_is_refused_naming_its_flag(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["node", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    assert main([*args, "--l1", f"local:{tmp_path / 'l1'}", flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and flag in err, err
