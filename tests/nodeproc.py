"""Real node processes for tests: ``bfs-smr node`` started, stopped and killed like a user would.

Each :class:`NodeProc` is an OS process running the CLI's ``node`` command with its own
data directory; :func:`cli` runs any other ``bfs-smr`` command as a process and returns
its exit code, last JSON line and stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

CLI = [sys.executable, "-m", "bfs_smr.cli"]


@dataclass
class Result:
    code: int
    json: Any
    stdout: str
    stderr: str


def cli(*args: str, timeout: float = 120.0) -> Result:
    """Run ``bfs-smr ARGS`` in a new process."""
    proc = subprocess.run(
        [*CLI, *args], check=False, capture_output=True, text=True, timeout=timeout
    )
    value = None
    lines = proc.stdout.strip().splitlines()
    if lines:
        try:
            value = json.loads(lines[-1])
        except ValueError:
            value = None
    return Result(proc.returncode, value, proc.stdout, proc.stderr)


def ok(*args: str, timeout: float = 120.0) -> Any:
    """Run ``bfs-smr ARGS --json``; fail the test unless it exits 0; return its JSON."""
    result = cli(*args, "--json", timeout=timeout)
    assert result.code == 0, f"bfs-smr {' '.join(args)} failed: {result.stderr}"
    return result.json


class _Daemon:
    """One ``bfs-smr`` daemon process (``COMMAND``) on a data directory."""

    COMMAND: tuple[str, ...] = ()
    LOG = ""

    def __init__(self, data_dir: Path, l1: str, *, extra: tuple[str, ...] = ()) -> None:
        self.dir = data_dir
        self.l1 = l1
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log = data_dir / self.LOG

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> Self:
        listen = f"127.0.0.1:{self.port if port is None else port}"
        log = open(self.log, "a")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                *CLI,
                *self.COMMAND,
                "--data-dir",
                str(self.dir),
                "--listen",
                listen,
                "--l1",
                self.l1,
                "--json",
                "--log-json",
                "--log-level",
                "debug",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise AssertionError(f"{self.COMMAND} did not start: {self.log.read_text()[-2000:]}")
        info = json.loads(line)
        self.port = int(info["listen"].rsplit(":", 1)[1])
        return self

    def stop(self) -> int:
        """SIGTERM, and wait for a graceful exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: the process dies at whatever instruction it was on."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def wait_log(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.log_events():
                if entry.get("event") == event:
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} in {self.log.name} within {timeout} s")


class NodeProc(_Daemon):
    """One ``bfs-smr node`` process on a data directory (created with ``bfs-smr init``)."""

    COMMAND = ("node",)
    LOG = "node.log"

    def __init__(self, data_dir: Path, l1: str, *, extra: tuple[str, ...] = ()) -> None:
        if not (data_dir / "identity.key").exists():
            ok("init", "--data-dir", str(data_dir))
        super().__init__(data_dir, l1, extra=extra)
        self.node_id: str = json.loads((data_dir / "node.json").read_text())["node_id"]

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        """Ask the node directly through its control endpoint (faster than a CLI process)."""
        from bfs_smr.runtime.node._control import call

        return call(self.dir, op, {**args, "timeout": timeout}, timeout=timeout + 10)


def local_l1(directory: Path, window: int) -> str:
    """A new local L1 file in ``directory`` with a challenge window of ``window`` seconds,
    made with ``bfs-smr l1 init`` as a user would; its ``--l1`` spec."""
    spec = f"local:{directory / 'l1.sqlite3'}"
    result = ok("l1", "init", "--l1", spec, "--window", str(window))
    assert result["window"] == window
    return spec


def open_channel(alice: NodeProc, bob: NodeProc, *extra: str, deposit: int = 500) -> str:
    """``bfs-smr channel open`` from ``alice`` to ``bob``; returns the channel id."""
    result = ok(
        "channel",
        "open",
        "--data-dir",
        str(alice.dir),
        "--peer",
        bob.address,
        "--peer-id",
        bob.node_id,
        "--deposit",
        str(deposit),
        *extra,
    )
    channel: str = result["channel"]
    assert len(channel) == 64
    return channel


def watch_secret_of(cheat: NodeProc, victim: NodeProc, params: Any) -> bytes:
    """A channel's watch secret as ``cheat``'s node derives it with ``victim``'s: what a
    unilateral close of the channel must reveal (a test cheating around the node's
    policy needs it, as the node itself does)."""
    from bfs_smr.runtime.store._datadir import DataDir
    from bfs_smr.runtime.tower import watch_secret

    return watch_secret(DataDir(cheat.dir).identity(), bytes.fromhex(victim.node_id), params)


class TowerProc(_Daemon):
    """One ``bfs-smr tower run`` process on a data directory (made with ``tower init``)."""

    COMMAND = ("tower", "run")
    LOG = "tower.log"

    def __init__(self, data_dir: Path, l1: str, *, extra: tuple[str, ...] = ()) -> None:
        if not (data_dir / "tower.json").exists():
            ok("tower", "init", "--data-dir", str(data_dir))
        super().__init__(data_dir, l1, extra=extra)
        self.tower_id: str = json.loads((data_dir / "tower.json").read_text())["tower_id"]

    @property
    def spec(self) -> str:
        """What a node gives as ``--tower``."""
        return f"{self.tower_id}@127.0.0.1:{self.port}"
