"""Strict tooling runs as part of the test command: ruff, mypy --strict, packaging."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_lint_is_clean():
    proc = run(sys.executable, "-m", "ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def installed_layout(where: Path) -> Path:
    """The package as it installs (apps/ and adapters/ inside bfs_smr/), made of links
    into the repository: mypy does not follow the editable install's import hook."""
    package = where / "bfs_smr"
    package.mkdir()
    for item in (ROOT / "bfs_smr").iterdir():
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    for folder in ("apps", "adapters"):
        (package / folder).symlink_to(ROOT / folder)
    return package


def test_mypy_strict_is_clean(tmp_path):
    """mypy --strict over the framework and, through its imports, the bundled apps and
    adapters, laid out as they install."""
    package = installed_layout(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "bfs_smr"],
        cwd=package.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_ships_framework_apps_adapters_and_py_typed(tmp_path):
    proc = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        ".",
        "--no-deps",
        "-w",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("bfs_smr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not any(n.startswith(("apps/", "adapters/")) for n in names)
    for needed in (
        "bfs_smr/__init__.py",
        "bfs_smr/py.typed",
        "bfs_smr/cli/__init__.py",
        "bfs_smr/runtime/node/__init__.py",
        "bfs_smr/apps/payments.py",
        "bfs_smr/apps/tictactoe.py",
        "bfs_smr/adapters/memory.py",
        "bfs_smr/adapters/evm/Adjudicator.json",
        "bfs_smr/apps/contracts/TicTacToe.json",  # the rules l1_rules names
        # the node's web page, served at GET / and GET /static/FILE
        "bfs_smr/runtime/node/web/index.html",
        "bfs_smr/runtime/node/web/app.js",
        "bfs_smr/runtime/node/web/style.css",
        "bfs_smr/runtime/node/web/favicon.svg",
    ):
        assert needed in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[bfs_smr.apps]" in text and "payments = bfs_smr.apps.payments:Payments" in text
