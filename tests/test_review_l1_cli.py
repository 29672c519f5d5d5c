"""Review of issue 12: ``--l1`` mistakes are one line and exit code 2, never a traceback.

A plug-in that fails to import, is not callable, or returns the wrong type was already
reported in one line; a factory that raises on the text after ``SCHEME:`` (a plug-in's
bug, or a ``ValueError`` from parsing it) escaped as a traceback with exit code 1, from
``l1 init|fund|balance`` and from ``node`` alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bfs_smr import LocalError
from bfs_smr.cli import main
from bfs_smr.plugins import _l1 as registry
from bfs_smr.plugins import load_l1, register_l1


@pytest.fixture
def crashy() -> Iterator[None]:
    saved = dict(registry._explicit)

    def factory(rest: str) -> Any:
        raise ValueError(f"cannot parse {rest!r}")

    register_l1("crashy", factory)
    yield
    registry._explicit.clear()
    registry._explicit.update(saved)


@pytest.mark.usefixtures("crashy")
def test_a_factory_that_raises_is_a_one_line_local_error() -> None:
    with pytest.raises(LocalError, match=r"the 'crashy' L1 plug-in .*cannot parse 'x'"):
        load_l1("crashy:x")


@pytest.mark.usefixtures("crashy")
def test_a_factory_that_raises_is_refused_in_one_line_by_the_l1_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    account = "ab" * 32
    for args in (
        ["l1", "init", "--l1", "crashy:x"],
        ["l1", "balance", "--l1", "crashy:x", account],
        ["l1", "fund", "--l1", "crashy:x", account, "5"],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("bfs-smr: error: "), err
        assert "cannot parse 'x'" in err, err


def test_a_node_on_a_factory_that_raises_stops_in_one_line(tmp_path: Path) -> None:
    """The same through an installed entry point, for ``bfs-smr node`` (its own process:
    a node configures logging for the process)."""
    dist = tmp_path / "crashy_l1-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy-l1\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bfs_smr.l1]\ncrashy = crashy_l1:factory\n")
    (tmp_path / "crashy_l1.py").write_text(
        "def factory(rest):\n    raise ValueError(f'cannot parse {rest!r}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cli = [sys.executable, "-m", "bfs_smr.cli"]
    data = str(tmp_path / "n")
    subprocess.run([*cli, "init", "--data-dir", data], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [*cli, "node", "--data-dir", data, "--listen", "127.0.0.1:0", "--l1", "crashy:x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert "\n" not in err and "cannot parse 'x'" in err, err
