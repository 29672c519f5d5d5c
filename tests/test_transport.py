"""The authenticated, encrypted transport: the sans-IO session, then real TCP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog

from bfs_smr import Ed25519, LocalError, Signer
from bfs_smr.runtime import transport as package
from bfs_smr.runtime._logging import short_id
from bfs_smr.runtime.transport import (
    KEEPALIVE,
    MAGIC,
    MAX_FRAME,
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_HOST,
    VERSION,
    Link,
    SecureSession,
    TransportConfig,
    TransportError,
    dial,
    serve,
)

HOST = "127.0.0.1"
WAIT = 10.0  # only a bound against hangs; nothing here is timed


def new_signer() -> Signer:
    return Signer(Ed25519(), os.urandom(32))


def forged(claimed: Signer) -> Signer:
    """A signer that claims ``claimed``'s node id but holds a different key."""
    impostor = new_signer()
    impostor.public_key = claimed.public_key
    return impostor


ALICE, BOB, CAROL = new_signer(), new_signer(), new_signer()


# -- sans-IO -------------------------------------------------------------------------------


def pair(
    *, max_frame: int = MAX_FRAME, allow: Callable[[bytes], bool] | None = None
) -> tuple[SecureSession, SecureSession]:
    config = TransportConfig(max_frame=max_frame)
    return (
        SecureSession.initiator(ALICE, BOB.public_key, config=config),
        SecureSession.responder(BOB, allow=allow, config=config),
    )


def pump(a: SecureSession, b: SecureSession, *, bytewise: bool = False) -> None:
    """Carry queued handshake bytes between ``a`` and ``b`` until neither has any."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            out = src.data_to_send()
            if out:
                moved = True
                chunks = [out[i : i + 1] for i in range(len(out))] if bytewise else [out]
                for chunk in chunks:
                    assert dst.receive_data(chunk) == []
        if not moved:
            return


def handshake(**kw: Any) -> tuple[SecureSession, SecureSession]:
    a, b = pair(**kw)
    pump(a, b)
    assert a.established and b.established
    return a, b


def test_handshake_authenticates_both_ends() -> None:
    a, b = handshake()
    assert a.peer_id == BOB.public_key
    assert b.peer_id == ALICE.public_key
    assert a.data_to_send() == b.data_to_send() == b""


def test_frames_arrive_intact_and_in_order_both_ways() -> None:
    a, b = handshake(max_frame=1000)
    payloads = [b"first", b"", os.urandom(1000), b"last"]
    assert b.receive_data(a.send_many(payloads)) == payloads
    assert a.receive_data(b.send(b"back") + b.send(b"")) == [b"back", b""]


def test_fed_one_byte_at_a_time() -> None:
    a, b = pair(max_frame=300)
    pump(a, b, bytewise=True)
    assert a.established and b.established
    payloads = [b"x" * 300, b"", b"yz"]
    wire = a.send_many(payloads)
    got = []
    for i in range(len(wire)):
        got += b.receive_data(wire[i : i + 1])
    assert got == payloads


def test_frames_split_across_reads_at_every_point() -> None:
    a, b = handshake()
    for cut in range(40):
        wire = a.send(b"a" * 10) + a.send(b"b" * 10)
        assert b.receive_data(wire[:cut]) + b.receive_data(wire[cut:]) == [b"a" * 10, b"b" * 10]


def test_frames_in_the_same_read_as_the_last_handshake_message() -> None:
    a, b = pair()
    b.receive_data(a.data_to_send())  # hello
    a.receive_data(b.data_to_send())  # reply
    b.receive_data(a.data_to_send())  # auth
    confirm = b.data_to_send()
    assert a.receive_data(confirm + b.send(b"early")) == [b"early"]


def test_wrong_identity_refused_by_the_initiator() -> None:
    a = SecureSession.initiator(ALICE, CAROL.public_key)
    b = SecureSession.responder(BOB)
    b.receive_data(a.data_to_send())
    with pytest.raises(TransportError, match="wrong identity"):
        a.receive_data(b.data_to_send())
    assert a.failed is not None and not a.established
    with pytest.raises(TransportError, match="already failed: wrong identity"):
        a.receive_data(b"more")


def test_identity_not_allowed_is_refused_by_the_responder() -> None:
    seen = []

    def allow(node_id: bytes) -> bool:
        seen.append(node_id)
        return False

    a, b = pair(allow=allow)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    with pytest.raises(TransportError, match="unknown identity"):
        b.receive_data(a.data_to_send())
    assert seen == [ALICE.public_key]
    assert b.data_to_send() == b""  # no confirm for a refused initiator


def test_a_failing_allow_refuses() -> None:
    def allow(node_id: bytes) -> bool:
        raise KeyError(node_id)

    a, b = pair(allow=allow)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    with pytest.raises(TransportError, match="allow\\(\\) raised KeyError"):
        b.receive_data(a.data_to_send())


def test_forged_initiator_identity_is_refused() -> None:
    a = SecureSession.initiator(forged(ALICE), BOB.public_key)
    b = SecureSession.responder(BOB, allow=lambda node_id: node_id == ALICE.public_key)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    with pytest.raises(TransportError, match="bad signature from the initiator"):
        b.receive_data(a.data_to_send())


def test_forged_responder_identity_is_refused() -> None:
    a = SecureSession.initiator(ALICE, BOB.public_key)
    b = SecureSession.responder(forged(BOB))
    b.receive_data(a.data_to_send())
    with pytest.raises(TransportError, match="bad signature from the responder"):
        a.receive_data(b.data_to_send())


def test_replayed_initiator_messages_are_refused() -> None:
    a, b = pair()
    hello = a.data_to_send()
    b.receive_data(hello)
    a.receive_data(b.data_to_send())
    auth = a.data_to_send()
    b.receive_data(auth)
    assert b.established
    fresh = SecureSession.responder(BOB)
    assert fresh.receive_data(hello) == []
    assert len(fresh.data_to_send()) == 144  # a reply with a fresh ephemeral
    with pytest.raises(TransportError, match="auth failed authentication"):
        fresh.receive_data(auth)


def test_replayed_responder_reply_is_refused() -> None:
    a, b = pair()
    b.receive_data(a.data_to_send())
    reply = b.data_to_send()
    other = SecureSession.initiator(ALICE, BOB.public_key)
    with pytest.raises(TransportError, match="reply failed authentication"):
        other.receive_data(reply)


@pytest.mark.parametrize("message", [0, 1, 2, 3])
@pytest.mark.parametrize("where", [0, -1])
def test_tampered_handshake_messages_are_refused(message: int, where: int) -> None:
    """A flipped bit anywhere fails the handshake, at the latest one message later."""
    a, b = pair()
    with pytest.raises(TransportError):
        for i, (src, dst) in enumerate([(a, b), (b, a), (a, b), (b, a)]):
            out = bytearray(src.data_to_send())
            if i == message:
                out[where] ^= 0x01
            dst.receive_data(bytes(out))
    assert not a.established


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "wrong magic"),
        (MAGIC + bytes([VERSION + 1]) + bytes(32), "unsupported transport version 2"),
        (MAGIC + bytes([VERSION]) + bytes(32), "low-order point"),
    ],
)
def test_bad_hello_is_refused(hello: bytes, reason: str) -> None:
    with pytest.raises(TransportError, match=reason):
        SecureSession.responder(BOB).receive_data(hello)


def test_short_messages_wait_and_eof_reports_where() -> None:
    b = SecureSession.responder(BOB)
    assert b.receive_data(MAGIC) == []
    with pytest.raises(TransportError, match="during the handshake"):
        b.receive_eof()


def wire_frames(a: SecureSession, *payloads: bytes) -> list[bytes]:
    return [a.send(p) for p in payloads]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda f: [f[0][:-1] + bytes([f[0][-1] ^ 1])], id="tampered-tag"),
        pytest.param(lambda f: [f[0][:6] + bytes([f[0][6] ^ 1]) + f[0][7:]], id="tampered-body"),
        pytest.param(lambda f: [f[1], f[0]], id="reordered"),
        pytest.param(lambda f: [f[1]], id="dropped"),
        pytest.param(lambda f: [f[0], f[0]], id="duplicated"),
    ],
)
def test_mangled_frames_fail_authentication(mangle: Callable[[list[bytes]], list[bytes]]) -> None:
    a, b = handshake()
    frames = wire_frames(a, b"one", b"two")
    with pytest.raises(TransportError, match="frame failed authentication"):
        for wire in mangle(frames):
            b.receive_data(wire)
    assert b.failed is not None
    with pytest.raises(TransportError, match="session failed"):
        b.send(b"x")
    assert b.close("why") != b""  # the peer can still be told why


def test_a_wrong_declared_length_fails_authentication() -> None:
    a, b = handshake()
    wire = a.send(b"abc")
    shortened = (int.from_bytes(wire[:4], "big") - 1).to_bytes(4, "big") + wire[4:]
    with pytest.raises(TransportError, match="failed authentication"):
        b.receive_data(shortened)


def test_oversized_declared_length_is_refused_from_the_prefix_alone() -> None:
    _, b = handshake(max_frame=100)
    with pytest.raises(TransportError, match="declares 101 bytes, over the 100-byte limit"):
        b.receive_data((101 + 17).to_bytes(4, "big"))


def test_too_short_declared_length_is_refused() -> None:
    _, b = handshake()
    with pytest.raises(TransportError, match="shorter than its tag"):
        b.receive_data((16).to_bytes(4, "big") + bytes(16))


def test_close_frame_carries_the_reason_and_ends_the_stream() -> None:
    a, b = handshake()
    wire = a.send(b"last") + a.close("shutting\ndown")
    assert b.receive_data(wire) == [b"last"]
    assert b.peer_close_reason == "shutting?down"
    assert not b.established
    b.receive_eof()  # a clean end after the close frame
    with pytest.raises(LocalError, match="closed locally"):
        a.send(b"x")
    assert a.close("again") == b""
    with pytest.raises(TransportError, match="peer closed"):
        b.send(b"x")
    with pytest.raises(TransportError, match="after the peer's close frame"):
        b.receive_data(b"\x00")


def test_data_after_a_close_frame_in_the_same_read_is_refused() -> None:
    a, b = handshake()
    with pytest.raises(TransportError, match="after the peer's close frame"):
        b.receive_data(a.close("bye") + b"\x00\x00")


def test_end_of_stream_without_a_close_frame_is_an_error() -> None:
    a, b = handshake()
    b.receive_data(a.send(b"x"))
    with pytest.raises(TransportError, match="without a close frame"):
        b.receive_eof()
    a, b = handshake()
    b.receive_data(a.send(b"xyz")[:-1])
    with pytest.raises(TransportError, match="in the middle of a frame"):
        b.receive_eof()


def test_local_misuse_raises_local_errors() -> None:
    a, b = pair(max_frame=10)
    with pytest.raises(LocalError, match="before the handshake"):
        a.send(b"x")
    assert a.close("x") == b""
    pump(a, b)
    with pytest.raises(LocalError, match="over max_frame"):
        a.send(b"x" * 11)
    with pytest.raises(LocalError, match="Ed25519"):
        SecureSession.responder(object())  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="32-byte"):
        SecureSession.initiator(ALICE, b"short")
    with pytest.raises(LocalError, match="TransportConfig"):
        SecureSession.responder(BOB, config={"max_frame": 10})  # type: ignore[arg-type]


def test_no_secret_in_repr() -> None:
    a, b = handshake()
    for session, signer in ((a, ALICE), (b, BOB)):
        text = repr(session)
        assert "established" in text
        assert signer._secret.hex() not in text
        assert signer._secret.hex()[:16] not in text


# -- asyncio over TCP ----------------------------------------------------------------------


class Harness:
    """A running server: links it accepted echo frames back; refusals are queued."""

    def __init__(self) -> None:
        self.links: asyncio.Queue[Link] = asyncio.Queue()
        self.refusals: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.accepted: list[Link] = []
        self.port = 0
        self.echo = True

    def on_link(self, link: Link) -> None:
        self.accepted.append(link)
        if self.echo:
            link.set_receiver(lambda lk, frames: lk.send_many(frames))
        self.links.put_nowait(link)

    def on_refused(self, peer: str, reason: str) -> None:
        assert peer.startswith("127.")  # HOST, or another loopback address on purpose
        self.refusals.put_nowait((peer, reason))

    async def refusal(self) -> str:
        _, reason = await asyncio.wait_for(self.refusals.get(), WAIT)
        return reason

    async def link(self) -> Link:
        return await asyncio.wait_for(self.links.get(), WAIT)

    async def still_serves(self) -> None:
        """A well-behaved client still gets an echo."""
        link = await dial(HOST, self.port, ALICE, BOB.public_key)
        inbox = collect(link)
        link.send(b"ping")
        assert await take(inbox, 1) == [b"ping"]
        link.close("done")
        await closed(link)


@contextlib.asynccontextmanager
async def running(
    identity: Signer = BOB, *, allow: Callable[[bytes], bool] | None = None, **config: Any
) -> AsyncIterator[Harness]:
    """A server echoing every frame; ``config`` are :class:`TransportConfig` fields."""
    harness = Harness()
    server = await serve(
        HOST,
        0,
        identity,
        harness.on_link,
        allow=allow,
        on_refused=harness.on_refused,
        config=TransportConfig(**config),
    )
    harness.port = server.sockets[0].getsockname()[1]
    try:
        yield harness
    finally:
        server.close()
        for link in harness.accepted:
            link.close("test over")
            await closed(link)
        await server.wait_closed()


def collect(link: Link) -> asyncio.Queue[bytes]:
    inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def on_frames(_link: Link, frames: list[bytes]) -> None:
        for frame in frames:
            inbox.put_nowait(frame)

    link.set_receiver(on_frames)
    return inbox


async def take(inbox: asyncio.Queue[bytes], n: int) -> list[bytes]:
    return [await asyncio.wait_for(inbox.get(), WAIT) for _ in range(n)]


async def closed(link: Link) -> str:
    return await asyncio.wait_for(asyncio.shield(link.closed), WAIT)


class RawClient:
    """A TCP client driving a SecureSession by hand, to misbehave after the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent = bytearray()

    @classmethod
    async def connect(cls, port: int, source: str | None = None) -> RawClient:
        """Connect to HOST:port (from the loopback address ``source``, if given)."""
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=local)
        return cls(reader, writer)

    @property
    def address(self) -> str:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def write(self, data: bytes) -> None:
        self.sent += data
        self.writer.write(data)

    async def handshake(self, session: SecureSession) -> None:
        self.write(session.data_to_send())
        while session.peer_id is None:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            assert data, "the server closed during the handshake"
            assert session.receive_data(data) == []
            self.write(session.data_to_send())

    async def read_to_end(self) -> bytes:
        """Everything until the server closes (a reset counts as the end)."""
        received = bytearray()
        with contextlib.suppress(ConnectionError):
            while data := await asyncio.wait_for(self.reader.read(65536), WAIT):
                received += data
        return bytes(received)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def test_link_carries_frames_both_ways_in_order() -> None:
    async def main() -> None:
        async with running() as srv:
            link = await dial(HOST, srv.port, ALICE, BOB.public_key)
            assert link.peer_id == BOB.public_key
            server_link = await srv.link()
            assert server_link.peer_id == ALICE.public_key
            inbox = collect(link)
            payloads = [b"", b"a", os.urandom(MAX_FRAME), b"", os.urandom(1000), b"z"]
            link.send(payloads[0])
            link.send_many(payloads[1:4])
            for p in payloads[4:]:
                link.send(p)
            await link.drain()
            assert await take(inbox, len(payloads)) == payloads
            many = [i.to_bytes(4, "big") for i in range(2000)]
            link.send_many(many)
            assert await take(inbox, len(many)) == many
            link.close("finished")
            assert await closed(link) == "finished"
            assert await closed(server_link) == "the peer closed the link: finished"
            with pytest.raises(TransportError, match="closed: finished"):
                link.send(b"x")
            with pytest.raises(TransportError, match="closed: finished"):
                await link.drain()

    asyncio.run(main())


def test_small_max_frame_both_ends_and_oversized_send() -> None:
    async def main() -> None:
        async with running(max_frame=64) as srv:
            link = await dial(
                HOST, srv.port, ALICE, BOB.public_key, config=TransportConfig(max_frame=64)
            )
            inbox = collect(link)
            link.send(b"m" * 64)
            assert await take(inbox, 1) == [b"m" * 64]
            with pytest.raises(LocalError, match="over max_frame"):
                link.send(b"m" * 65)
            link.close("done")
            await closed(link)

    asyncio.run(main())


def test_frames_before_set_receiver_are_buffered_then_delivered_together() -> None:
    async def main() -> None:
        async with running() as srv:
            srv.echo = False
            link = await dial(HOST, srv.port, ALICE, BOB.public_key)
            server_link = await srv.link()
            link.send_many([b"1", b"2", b"3"])
            link.send(b"4")
            link.close("sent")
            assert await closed(server_link) == "the peer closed the link: sent"
            calls: list[list[bytes]] = []
            server_link.set_receiver(lambda _lk, frames: calls.append(frames))
            assert calls == [[b"1", b"2", b"3", b"4"]]
            await closed(link)

    asyncio.run(main())


def test_a_raising_receiver_closes_only_its_link() -> None:
    async def main() -> None:
        async with running() as srv:
            srv.echo = False
            link = await dial(HOST, srv.port, ALICE, BOB.public_key)
            server_link = await srv.link()

            def broken(_link: Link, _frames: list[bytes]) -> None:
                raise ValueError("boom")

            server_link.set_receiver(broken)
            link.send(b"x")
            assert "ValueError" in await closed(server_link)
            assert "ValueError" in await closed(link)  # told by the close frame
            srv.echo = True
            await srv.still_serves()

    asyncio.run(main())


def test_a_raising_on_link_closes_only_that_link() -> None:
    async def main() -> None:
        accepted: list[Link] = []

        def on_link(link: Link) -> None:
            accepted.append(link)
            raise RuntimeError("no")

        server = await serve(HOST, 0, BOB, on_link)
        port = server.sockets[0].getsockname()[1]
        for n in (1, 2):  # the server survives it
            link = await dial(HOST, port, ALICE, BOB.public_key)
            assert "RuntimeError" in await closed(link)  # told by the close frame
            assert len(accepted) == n
            assert await closed(accepted[-1]) == "on_link raised RuntimeError"
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_wrong_expected_identity_fails_dial() -> None:
    async def main() -> None:
        async with running() as srv:
            with pytest.raises(TransportError, match="wrong identity"):
                await dial(HOST, srv.port, ALICE, CAROL.public_key)
            assert "handshake" in await srv.refusal()
            await srv.still_serves()

    asyncio.run(main())


def test_identity_refused_by_allow_fails_dial() -> None:
    async def main() -> None:
        allowed = {ALICE.public_key}
        async with running(allow=allowed.__contains__) as srv:
            with pytest.raises(TransportError, match="instead of accepting this node's identity"):
                await dial(HOST, srv.port, CAROL, BOB.public_key)
            assert "unknown identity" in await srv.refusal()
            await srv.still_serves()

    asyncio.run(main())


def test_forged_identity_claims_are_refused() -> None:
    async def main() -> None:
        async with running(allow={ALICE.public_key}.__contains__) as srv:
            with pytest.raises(TransportError):
                await dial(HOST, srv.port, forged(ALICE), BOB.public_key)
            assert "bad signature from the initiator" in await srv.refusal()
            await srv.still_serves()
        async with running(identity=forged(BOB)) as srv:
            with pytest.raises(TransportError, match="bad signature from the responder"):
                await dial(HOST, srv.port, ALICE, BOB.public_key)

    asyncio.run(main())


def test_recorded_handshake_replayed_to_a_new_connection_is_refused() -> None:
    async def main() -> None:
        async with running() as srv:
            original = await RawClient.connect(srv.port)
            await original.handshake(SecureSession.initiator(ALICE, BOB.public_key))
            await srv.link()
            recording = bytes(original.sent)
            assert len(recording) == 41 + 136  # hello ‖ auth
            replay = await RawClient.connect(srv.port)
            replay.write(recording)
            assert "auth failed authentication" in await srv.refusal()
            await replay.read_to_end()
            await replay.close()
            await original.close()
            await srv.still_serves()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda f: [f[0][:-1] + bytes([f[0][-1] ^ 0x80])], "frame failed authentication"),
        (lambda f: [f[1], f[0]], "frame failed authentication"),
        (lambda f: [f[1]], "frame failed authentication"),
        (lambda f: [f[0], f[0]], "frame failed authentication"),
        (lambda f: [f[0][:-3]], "in the middle of a frame"),
        (lambda f: [(2**31).to_bytes(4, "big")], "over the 1024-byte limit"),
    ],
    ids=["tampered", "reordered", "dropped", "duplicated", "truncated", "oversized"],
)
def test_a_bad_frame_closes_that_connection_only(
    mangle: Callable[[list[bytes]], list[bytes]], reason: str
) -> None:
    async def main() -> None:
        async with running(max_frame=1024) as srv:
            raw = await RawClient.connect(srv.port)
            session = SecureSession.initiator(
                ALICE, BOB.public_key, config=TransportConfig(max_frame=1024)
            )
            await raw.handshake(session)
            server_link = await srv.link()
            for wire in mangle([session.send(b"one"), session.send(b"two")]):
                raw.write(wire)
            if reason == "in the middle of a frame":
                raw.writer.write_eof()
            # The oversized case sent only the 4-byte prefix: refused without its body.
            assert reason in await closed(server_link)
            answer = await raw.read_to_end()
            if "authentication" in reason or "limit" in reason:
                with contextlib.suppress(TransportError):  # duplicated: one echo first
                    session.receive_data(answer)
                assert reason in (session.peer_close_reason or "")
            await raw.close()
            await srv.still_serves()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("opening", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(60), "wrong magic"),
        (b"GET / HTTP/1.1\r\nHost: node\r\n\r\n", "wrong magic"),
        (MAGIC + bytes([VERSION + 1]) + bytes(32), "unsupported transport version"),
        (b"", "did not complete within 0.2s"),
        (MAGIC + bytes([VERSION]) + bytes(31), "did not complete within 0.2s"),
    ],
    ids=["tls", "http", "version", "silent", "short-hello"],
)
def test_bad_openings_are_refused_and_the_server_keeps_serving(opening: bytes, reason: str) -> None:
    async def main() -> None:
        async with running(handshake_timeout=0.2) as srv:
            raw = await RawClient.connect(srv.port)
            raw.write(opening)
            assert reason in await srv.refusal()
            assert await raw.read_to_end() == b""
            await raw.close()
            await srv.still_serves()

    asyncio.run(main())


def test_handshakes_in_progress_are_bounded_per_host_and_in_all() -> None:
    async def main() -> None:
        async with running(max_handshakes=5, max_handshakes_per_host=3) as srv:

            async def refused() -> tuple[str, str]:
                return await asyncio.wait_for(srv.refusals.get(), WAIT)

            per_host = f"too many handshakes in progress from {HOST} (3)"
            held = [await RawClient.connect(srv.port) for _ in range(3)]  # silent: pending
            extra = await RawClient.connect(srv.port)
            assert await refused() == (extra.address, per_host)
            assert await extra.read_to_end() == b""  # dropped at once, not after the timeout
            await extra.close()
            # Another host still gets in, up to the total.
            others = [await RawClient.connect(srv.port, source="127.0.0.2") for _ in range(2)]
            over = await RawClient.connect(srv.port, source="127.0.0.2")
            assert await refused() == (over.address, "too many handshakes in progress (5)")
            await over.close()
            # An ended handshake frees its place.
            for raw in (*held, *others):
                await raw.close()
                peer, reason = await refused()
                assert peer == raw.address and "during the handshake" in reason, reason
            # Established links do not count: with one up, three more handshakes run.
            link = await dial(HOST, srv.port, ALICE, BOB.public_key)
            held = [await RawClient.connect(srv.port) for _ in range(3)]
            extra = await RawClient.connect(srv.port)
            assert await refused() == (extra.address, per_host)
            for raw in (*held, extra):
                await raw.close()
            link.close("done")
            await closed(link)

    asyncio.run(main())


def test_connections_keep_alive_and_skip_nagle() -> None:
    async def main() -> None:
        async with running() as srv:
            link = await dial(HOST, srv.port, ALICE, BOB.public_key)
            ends = [link, await srv.link()]
            for end in ends:
                sock = end._transport.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                if hasattr(socket, "TCP_KEEPIDLE"):
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE[0]
            link.close("done")
            await closed(link)

    asyncio.run(main())


def test_dial_times_out_against_a_silent_server() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transports: list[asyncio.BaseTransport] = []

        class Silent(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transports.append(transport)

        server = await loop.create_server(Silent, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TransportError, match=r"did not complete within 0\.2s"):
            await dial(HOST, port, ALICE, BOB.public_key, timeout=0.2)
        for transport in transports:
            transport.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(TransportError, match="cannot connect"):
            await dial(HOST, port, ALICE, BOB.public_key)

    asyncio.run(main())


def test_drain_waits_while_the_peer_does_not_read() -> None:
    async def main() -> None:
        go = asyncio.Event()
        done = asyncio.Event()
        received = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            session = SecureSession.responder(BOB)
            while session.peer_id is None:
                session.receive_data(await reader.read(65536))
                writer.write(session.data_to_send())
            await go.wait()  # stop reading until told
            while data := await reader.read(1 << 20):
                received += sum(len(f) for f in session.receive_data(data))
                if session.peer_close_reason is not None:
                    break
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        link = await dial(HOST, port, ALICE, BOB.public_key)
        frame = bytes(1 << 20)
        link.send_many([frame] * 64)
        drained = asyncio.ensure_future(link.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drained.done()
        go.set()
        await asyncio.wait_for(drained, WAIT)
        link.close("done")
        await asyncio.wait_for(done.wait(), WAIT)
        assert received == 64 << 20
        await closed(link)
        server.close()
        await server.wait_closed()

    asyncio.run(main())


# -- configuration, public names, logs -----------------------------------------------------


def test_config_defaults_are_the_exported_limits() -> None:
    config = TransportConfig()
    assert config.max_frame == MAX_FRAME == 4 * 1024 * 1024
    assert config.max_handshakes == MAX_HANDSHAKES == 256
    assert config.max_handshakes_per_host == MAX_HANDSHAKES_PER_HOST == 64
    assert config.keepalive == KEEPALIVE == (30, 10, 3)
    assert config.handshake_timeout == 5.0
    with pytest.raises(AttributeError):
        config.max_frame = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("handshake_timeout", 0),
        ("handshake_timeout", -1.0),
        ("handshake_timeout", float("nan")),
        ("handshake_timeout", float("inf")),
        ("handshake_timeout", "5"),
        ("max_frame", -1),
        ("max_frame", 0xFFFF_FFFF),
        ("max_frame", 1.5),
        ("max_handshakes", 0),
        ("max_handshakes_per_host", 0),
        ("max_handshakes", True),
        ("keepalive", (30, 10)),
        ("keepalive", (30, 0, 3)),
        ("keepalive", [30, 10, 3]),
    ],
)
def test_config_refuses_values_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(LocalError, match=field):
        TransportConfig(**{field: value})


def test_config_accepts_the_edges() -> None:
    TransportConfig(max_frame=0, max_handshakes=1, max_handshakes_per_host=1)
    TransportConfig(max_frame=0xFFFF_FFFF - 17, handshake_timeout=1, keepalive=(1, 1, 1))


def test_dial_takes_a_timeout_or_a_config_not_both() -> None:
    async def main() -> None:
        with pytest.raises(LocalError, match="not both"):
            await dial(HOST, 1, ALICE, BOB.public_key, timeout=1, config=TransportConfig())
        with pytest.raises(LocalError, match="handshake_timeout"):
            await dial(HOST, 1, ALICE, BOB.public_key, timeout=0)
        with pytest.raises(LocalError, match="TransportConfig"):
            await serve(HOST, 0, BOB, lambda _: None, config=5)  # type: ignore[arg-type]

    asyncio.run(main())


def test_keepalive_comes_from_the_config() -> None:
    if not hasattr(socket, "TCP_KEEPIDLE"):
        pytest.skip("no TCP_KEEPIDLE on this system")
    config = TransportConfig(keepalive=(7, 2, 4))

    async def main() -> None:
        async with running(keepalive=config.keepalive) as srv:
            link = await dial(HOST, srv.port, ALICE, BOB.public_key, config=config)
            for end in (link, await srv.link()):
                sock = end._transport.get_extra_info("socket")
                got = [
                    sock.getsockopt(socket.IPPROTO_TCP, option)
                    for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
                ]
                assert got == [7, 2, 4]
            link.close("done")
            await closed(link)

    asyncio.run(main())


def test_the_public_names_are_pinned() -> None:
    assert sorted(package.__all__) == [
        "KEEPALIVE",
        "Link",
        "MAGIC",
        "MAX_FRAME",
        "MAX_HANDSHAKES",
        "MAX_HANDSHAKES_PER_HOST",
        "SecureSession",
        "TransportConfig",
        "TransportError",
        "VERSION",
        "dial",
        "serve",
    ]
    for name in package.__all__:
        assert hasattr(package, name), name
    # What tests/byzantine_peer.py uses to forge a handshake stays reachable.
    for name in ("_dh", "_hash", "_kdf", "_open", "_seal", "_P_TH1", "_P_TH2", "_P_HS2"):
        assert hasattr(package, name), name


def test_link_logs_are_bound_to_the_peer() -> None:
    """Link lines name the peer as every line about a peer does (``peer``: the start of its
    node id) and the socket address it is at (``address``)."""

    async def main() -> tuple[list[dict[str, Any]], str]:
        with structlog.testing.capture_logs() as events:
            async with running() as srv:
                link = await dial(HOST, srv.port, ALICE, BOB.public_key)
                server_link = await srv.link()
                address = link.peer_address
                link.close("done")
                await closed(link)
                await closed(server_link)
        return events, address

    events, address = asyncio.run(main())
    alice, bob = short_id(ALICE.public_key), short_id(BOB.public_key)
    closed_events = [e for e in events if e["event"] == "link closed"]
    by_side = {e["peer"]: e for e in closed_events}
    assert set(by_side) == {alice, bob}, closed_events
    assert by_side[bob]["address"] == address  # the dialler's view of the server
    assert by_side[bob]["reason"] == "done"
    assert by_side[alice]["reason"] == "the peer closed the link: done"
    established = [e for e in events if e["event"] == "link established"]
    assert {e["peer"] for e in established} == {alice, bob}
    assert all(e["address"].startswith("127.0.0.1:") for e in events), events
