"""One channel party as its own OS process, for the crash injector.

It runs the real protocol over TCP on loopback with a durable store, and can be killed
(SIGKILL) at any instant, including at named steps chosen by the injector. It writes:

- ``sent.log``: every frame, appended and flushed *before* it is written to the socket,
  so the injector sees every signature that may have left (a superset is conservative);
- ``done.log``: every command reported done, after the store made it durable.

Both files survive SIGKILL (the kernel keeps what was written). Usage:
``python party.py DIR`` with ``DIR/config.json`` written by the injector.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from bfs_smr import (
    ChannelFinalized,
    ChannelLimits,
    ChannelParams,
    CommandCommitted,
    CommandFailed,
    Ed25519,
    PersistUpdate,
    RemoteViolation,
    SendMessage,
    ServeLog,
    Signer,
)
from bfs_smr._codec import decode
from bfs_smr.runtime import load_app
from bfs_smr.runtime.store import Store

MAX_FRAME = 4 << 20
STEPS = (
    "after_receive",
    "after_persist",
    "after_final_persist",  # the final update is durable, nothing of it sent or reported
    "mid_send",
    "after_send",
    "after_report",
    "close",
)


class Party:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        cfg = json.loads((directory / "config.json").read_text())
        self.cfg = cfg
        self.role = cfg["role"]
        self.params = ChannelParams.from_value(decode(bytes.fromhex(cfg["params"])))
        self.app = load_app(self.params.app)
        from bfs_smr.adapters.memory import MemoryFormat

        self.fmt = MemoryFormat(self.params.l1)
        self.signer = Signer(Ed25519(), bytes.fromhex(cfg["seed"]))
        self.crash_step = cfg.get("crash_step")
        self.crash_count = cfg.get("crash_count", 0)
        # Pipelined always (8 in flight); batched by the caller (``batch`` commands per
        # issue_batch) or automatically under load (``max_batch``), as the injector picks.
        self.batch = cfg.get("batch", 1)
        limits = ChannelLimits(8, cfg.get("max_batch", 1), max_queue=100_000)
        self.store = Store(directory / "store")
        cid = self.params.channel_id
        if cid in self.store.channel_ids():
            self.key = self.store.key_of(cid)
            self.chan = self.store.load(cid, self.app, self.fmt, self.signer, limits=limits)
        else:
            self.key = self.store.add_channel(self.params)
            self.chan = self.store.load(cid, self.app, self.fmt, self.signer, limits=limits)
        self.sent = open(directory / "sent.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.done = open(directory / "done.log", "a")  # noqa: SIM115
        if self.chan.committed is None and not self.chan.in_flight():
            self.chan.start()  # the sequencer proposes the opening update; a no-op for Bob
        self.sock: socket.socket | None = None
        self.buf = b""
        self.own_committed = self._count_own_in_log()
        self.finished = self.chan.committed is not None and self.chan.committed.update.final
        if self.finished:
            # Killed between making the final update durable and reporting it: report what
            # the store holds now (once durable, it may be reported at any later time).
            assert self.chan.committed is not None
            self.done.write(f"final {self.chan.committed.seq}\n")
            self.done.flush()

    def _count_own_in_log(self) -> int:
        if self.chan.committed is None:
            return 0
        log = self.store.log_range(self.params.channel_id, 0, self.chan.seq)
        return sum(1 for s in log for e in s.update.commands if e.actor == self.chan.index)

    def step(self, name: str) -> None:
        """Die here if the injector asked for it (the n-th time this step is reached)."""
        if self.crash_step == name:
            self.crash_count -= 1
            if self.crash_count <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    # -- transport --------------------------------------------------------------------

    def connect(self) -> None:
        port_file = self.dir.parent / "alice" / "port"
        if self.role == "alice":
            if not hasattr(self, "listener"):
                self.listener = socket.create_server(("127.0.0.1", 0))
                port_file.write_text(str(self.listener.getsockname()[1]))
            self.listener.settimeout(0.2)
            try:
                self.sock, _ = self.listener.accept()
            except TimeoutError:
                return
        else:
            try:
                port = int(port_file.read_text())
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            except (OSError, ValueError):
                time.sleep(0.05)
                return
        self.sock.setblocking(True)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.chan.resync()
        self.flush()

    def disconnect(self, why: str) -> None:
        self.done.write(f"disconnect {why}\n")
        self.done.flush()
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def send_frames(self, frames: list[bytes]) -> None:
        for i, data in enumerate(frames):
            self.sent.write(struct.pack(">I", len(data)) + data)
            self.sent.flush()
            if i == len(frames) // 2:
                self.step("mid_send")
            if self.sock is not None:
                try:
                    self.sock.sendall(struct.pack(">I", len(data)) + data)
                except OSError as exc:
                    self.disconnect(f"send: {exc!r}")
                    return

    # -- the protocol step --------------------------------------------------------------

    def flush(self) -> None:
        effects = self.chan.effects()
        if not effects:
            return
        self.store.persist(self.key, effects, self.chan)
        self.step("after_persist")
        if any(isinstance(effect, ChannelFinalized) for effect in effects):
            self.step("after_final_persist")
        frames, reports = [], []
        for effect in effects:
            if isinstance(effect, SendMessage):
                frames.append(effect.data)
            elif isinstance(effect, CommandCommitted):
                if effect.local:
                    self.own_committed += 1
                reports.append(f"done {effect.seq} {effect.actor} {effect.ref}")
            elif isinstance(effect, CommandFailed):
                reports.append(f"failed {effect.ref}")
            elif isinstance(effect, ChannelFinalized):
                reports.append(f"final {effect.update.seq}")
                self.finished = True
            elif isinstance(effect, ServeLog):
                entries = self.store.log_range(
                    self.params.channel_id, effect.first_seq, effect.last_seq
                )
                self.send_frames(frames)
                frames = []
                self.chan.serve_log(entries)
                self.flush()
            elif isinstance(effect, PersistUpdate):
                pass
        self.send_frames(frames)
        self.step("after_send")
        for line in reports:
            self.done.write(line + "\n")
        self.done.flush()
        self.step("after_report")

    def work(self) -> None:
        """Issue this party's share of commands, and Alice closes when all are in."""
        target = self.cfg["commands"]
        chan = self.chan
        if chan.phase.value != "open":
            return
        if self.role == "alice":
            # Everything pending less the follower's commands in flight.
            own_pending = chan.pending - sum(
                1 for s in chan.in_flight() for e in s.update.commands if e.actor != 0
            )
            while self.own_committed + own_pending < target and own_pending < 8:
                k = min(self.batch, target - self.own_committed - own_pending)
                chan.issue_batch([{"pay": 1}] * k)
                own_pending += k
            peer_done = (
                chan.committed is not None and chan.state[1] == target - self.cfg["peer_commands"]
            )
            if self.own_committed >= target and peer_done and not chan.in_flight():
                chan.close()
                self.step("close")
        else:
            while self.own_committed + chan.pending < target and chan.pending < 4:
                if chan.state[1] < 1:
                    break
                chan.issue({"pay": 1})

    def run(self) -> None:
        deadline = time.monotonic() + self.cfg.get("timeout", 60)
        # Keep serving after the final update too: the peer may still need it (a resync
        # after its own restart). The injector stops both once both hold it.
        while time.monotonic() < deadline:
            if self.sock is None:
                self.connect()
                continue
            try:
                self.work()
            except Exception as exc:  # noqa: BLE001 - report and stop, the injector checks
                self.done.write(f"error work {type(exc).__name__}: {exc}\n")
                self.done.flush()
            self.flush()
            if self.sock is None:
                continue  # the link dropped while sending
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError as exc:
                self.disconnect(f"recv: {exc!r}")
                continue
            if not chunk:
                self.disconnect("eof")
                continue
            self.buf += chunk
            while len(self.buf) >= 4:
                (size,) = struct.unpack(">I", self.buf[:4])
                if size > MAX_FRAME:
                    self.disconnect("oversized frame")
                    break
                if len(self.buf) < 4 + size:
                    break
                data, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                try:
                    self.chan.receive(data)
                except RemoteViolation as exc:
                    self.done.write(f"violation {exc.reason}\n")
                    self.done.flush()
                self.step("after_receive")
                self.flush()
                if self.sock is None:
                    break  # the link dropped: what is still buffered is lost with it
        self.done.write("exit\n")
        self.done.flush()


if __name__ == "__main__":
    Party(Path(sys.argv[1])).run()
