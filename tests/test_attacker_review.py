"""An attacker's review of issue 11's hardening: each test is one attack.

A test marked ``xfail(strict=True)`` is an attack that SUCCEEDS today (a real defect,
named in its reason); the others are attacks the code withstood, kept as regression tests.
Attacks on a node run against a real ``bfs-smr node`` process over TCP loopback, with
the attacker speaking the transport from this process under identities it makes freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bfs_smr import ChannelParams, Ed25519, Signer, decode, encode
from bfs_smr.runtime import transport as t
from tests.nodeproc import NodeProc, ok

NODE_FRAME = b"\x02"
WINDOW = 2


@pytest.fixture
def l1(tmp_path: Path) -> str:
    spec = f"local:{tmp_path / 'l1.sqlite3'}"
    ok("l1", "init", "--l1", spec, "--window", str(WINDOW))
    return spec


@pytest.fixture
def victim(tmp_path: Path, l1: str) -> Iterator[NodeProc]:
    node = NodeProc(tmp_path / "victim", l1)
    ok("l1", "fund", "--l1", l1, node.node_id, "1000")
    node.start()
    yield node
    if node.alive():
        assert node.stop() == 0, node.log.read_text()[-3000:]


class Stranger:
    """A peer with a fresh identity and one established link to the victim."""

    def __init__(self, victim: NodeProc) -> None:
        self.victim = victim
        self.identity = Signer(Ed25519(), os.urandom(32))
        self.domain = b""
        self.inbox: list[Any] = []

    async def connect(self) -> None:
        host, port = self.victim.address.rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self.session = t.SecureSession.initiator(self.identity, bytes.fromhex(self.victim.node_id))
        while True:
            out = self.session.data_to_send()
            if out:
                self.writer.write(out)
                await self.writer.drain()
            if self.session.established:
                break
            self._take(await asyncio.wait_for(self.reader.read(1 << 16), 10))
        account = await self.expect(lambda m: m[0] == "account")
        self.domain = account[1]

    def _take(self, data: bytes) -> None:
        if not data:
            raise ConnectionError("the victim ended the connection")
        for frame in self.session.receive_data(data):
            if frame[:1] == NODE_FRAME:
                self.inbox.append(decode(frame[1:]))

    async def send(self, *messages: Any) -> None:
        self.writer.write(b"".join(self.session.send(NODE_FRAME + encode(m)) for m in messages))
        await self.writer.drain()

    async def expect(self, wanted: Any, timeout: float = 20.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for i, msg in enumerate(self.inbox):
                    if wanted(msg):
                        return self.inbox.pop(i)
                self._take(await self.reader.read(1 << 16))

    def params(self, **changes: Any) -> ChannelParams:
        fields: dict[str, Any] = {
            "l1": self.domain,
            "participants": (self.identity.public_key, bytes.fromhex(self.victim.node_id)),
            "deposits": (0, 0),
            "app": "payments",
            "app_version": 1,
            "nonce": int.from_bytes(os.urandom(7), "big"),
            "challenge_window": 86_400,
        }
        fields.update(changes)
        return ChannelParams(**fields)

    async def open_many(self, count: int, **changes: Any) -> int:
        """Send ``count`` opens at once; how many the victim accepted."""
        await self.send(["account", self.domain, self.identity.public_key])
        await self.send(*(["open", self.params(**changes).to_value()] for _ in range(count)))
        accepted = 0
        for _ in range(count):
            reply = await self.expect(lambda m: m[0] == "open-reply", timeout=60)
            accepted += reply[2] is None
        return accepted

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.close()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.xfail(
    strict=True,
    reason="finding: a stranger makes the node store channels without bound (unfunded, "
    "never expired): 10,000 per free identity, each up to 64 KiB of options",
)
def test_strangers_cannot_fill_the_store_with_unfunded_channels(victim: NodeProc) -> None:
    """Three fresh identities each open 100 channels (nothing deposited by anyone, 30 KiB
    of options each). Nothing is funded on L1 and nothing ever will be, yet the node
    stores every one and keeps it across restarts (and its watcher sweeps each one on L1
    every 30 s). A bound on what strangers may store must hold: at most 64 such channels."""

    async def attack() -> int:
        accepted = 0
        for _ in range(3):
            s = Stranger(victim)
            await s.connect()
            accepted += await s.open_many(100, options={"pad": b"x" * 30_000})
            s.close()
        return accepted

    accepted = _run(attack())
    victim.stop()
    victim.start()
    stored = len(victim.call("list")["channels"])
    size = (victim.dir / "channels.sqlite3").stat().st_size
    print(f"accepted {accepted}, stored after restart {stored}, store {size:,} bytes")
    assert stored <= 64
