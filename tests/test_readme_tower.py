"""The README's watchtower walkthrough, run as written in one bash shell.

Only the directory (/tmp/tw), the three ports and the window (20 s, here 6 s) are
changed, so that runs in parallel do not collide and the test stays short.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_readme_walkthroughs import free_port, readme_block, run_as_pasted


def test_the_readme_tower_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = readme_block("tower-walkthrough").replace("/tmp/tw", str(tmp_path / "tw"))
    for port in ("9800", "9801", "9802"):
        script = script.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    script = script.replace("--window 20", "--window 6")
    out = run_as_pasted(script, tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert re.search(r'"balance": 300\b', lines[-1]), lines[-1]
    log = (tmp_path / "tw" / "tower.log").read_text()
    assert "stale close refuted" in log
