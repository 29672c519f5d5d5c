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


def test_mypy_strict_is_clean():
    proc = run(sys.executable, "-m", "mypy")
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
    for needed in (
        "bfs_smr/__init__.py",
        "bfs_smr/py.typed",
        "bfs_smr/runtime/cli.py",
        "apps/payments.py",
        "apps/tictactoe.py",
        "adapters/memory.py",
    ):
        assert needed in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[bfs_smr.apps]" in text and "payments = apps.payments:Payments" in text
