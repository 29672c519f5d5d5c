"""The README's two-node walkthrough, its tic-tac-toe game and its HTTP API walkthrough,
run as written in one bash shell (each continues in the shell of the one before).

Only the directory (/tmp/two), the four ports and the window (30 s: no window is waited
out here) are changed, so that runs in parallel do not collide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(marker: str) -> str:
    """The shell block of README.md that follows ``<!-- marker -->``, as written."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"<!-- {marker} -->")
    body = text.index("```sh\n", start) + len("```sh\n")
    return text[body : text.index("```\n", body)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_as_pasted(script: str, cwd: Path) -> str:
    """Run ``script`` in one bash shell, as a user pasting it would (with ``set -e``, in an
    80-column terminal, with this environment's bfs-smr first on the PATH and none of the
    BFS_SMR_* defaults of the shell running the tests); its stdout, once it succeeded."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "COLUMNS": "80"}
    for name in ("BFS_SMR_DATA_DIR", "BFS_SMR_L1"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "-c", "set -e\n" + script],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_readme_two_node_tictactoe_and_http_walkthroughs_run_as_written(tmp_path: Path) -> None:
    script = (
        readme_block("two-node-walkthrough")
        + readme_block("tictactoe-walkthrough")
        + readme_block("http-walkthrough")
        + "kill $ALICE_NODE $BOB_NODE\n"  # (the README leaves them up for the web page)
    )
    script = script.replace("/tmp/two", str(tmp_path / "two"))
    for port in ("9701", "9702", "8701", "8702"):
        script = script.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    out = run_as_pasted(script, tmp_path)
    with_ids = [  # what bfs-smr prints for people (the HTTP walkthrough's curl prints JSON)
        line
        for line in out.splitlines()
        if re.search(r"[0-9a-f]{64}", line) and not line.startswith(("{", "http"))
    ]
    assert with_ids and all(len(line) <= 80 for line in with_ids), out  # ids whole, 80 cols
    assert "balance      you 120, peer 380" in out  # Bob's show of the payments channel
    balances = [line.split()[1] for line in out.splitlines() if line.startswith("balance ")]
    assert balances[-2:] == ["1120", "890"], out  # Bob after payments, Alice after the game
    assert "outcome      you 0, peer 20 (if closed now)" in out  # the fresh game: forfeit
    assert "game         your move" in out
    assert "game         the peer won" in out  # Bob's view of the finished game
    assert "  X | O | O" in out  # the board, drawn
    assert re.search(r"^  you  [0-9a-f]{64}  20$", out, re.M), out  # Alice's close: she won
    # The HTTP walkthrough: an open over HTTP, a payment, a refused one with its reason,
    # a close with its payouts, metrics, the event stream and the page's URL.
    assert '"payouts"' in out and "amount must be a non-negative integer" in out, out
    assert re.search(r"^bfs_smr_updates_committed_total [1-9]", out, re.M), out
    assert re.search(r"^ +[1-9][0-9]* event: update$", out, re.M), out
    assert re.search(r"^http://127\.0\.0\.1:[0-9]+/#token=\S+$", out, re.M), out
