"""A Byzantine peer: attacks a running ``bfs-smr node`` and reports what the node did.

Run as its own OS process (the node under attack must not share anything with it)::

    python tests/byzantine_peer.py HOST:PORT VICTIM_NODE_ID OUTDIR \
        [--channel CID] [--impersonate NODE_ID] [--attacks NAME,...] [--slowloris N]

It makes a fresh identity of its own, runs each attack on its own TCP connection and
writes ``OUTDIR/report.json``::

    {"attacker_id": HEX, "victim": HOST:PORT, "attacks": {NAME: RESULT, ...}}

Every RESULT records ``local_address`` (this end of the connection, as the node's log
names it), ``outcome`` — ``"eof"`` or ``"reset"`` when the node closed the connection,
``"open"`` when it still had not after ``--close-timeout`` seconds — ``close_reason`` (the
reason in the node's close frame, when the handshake had completed and the node sent
one), ``seconds`` (from the offending bytes to the close) and, for some attacks, more.

Attacks (``--attacks`` picks some; the default runs all, in this order):

``genuine``
    an honest handshake under this peer's own identity, then a polite close. Its bytes
    are recorded for ``replay``. ``established`` says whether the node took it.
``garbage``, ``bad_version``, ``low_order_key``
    not a handshake: random bytes, the magic with an unknown version, an all-zero
    (low-order) ephemeral key.
``replay``
    the recorded ``genuine`` byte stream sent again, byte for byte, on a new connection.
``impersonate``
    a handshake claiming ``--impersonate``'s identity; this peer lacks that key, so it
    signs with its own and the signature cannot verify.
``wrong_expected_id``
    a dial expecting the node to be ``--impersonate``: the dial must fail (``dial_error``).
``oversized_length``, ``tampered_frame``, ``reordered_frames``
    after a genuine handshake: a length prefix of 0xFFFFFFFF; a frame with one ciphertext
    byte flipped; two frames in the wrong order.
``undecodable_node_message``, ``unknown_frame_kind``, ``empty_frame``, ``big_junk``
    after a genuine handshake, one well-encrypted frame the node must close the link on:
    bytes that are not CBOR; an unknown frame kind; an empty frame; ``max_frame`` bytes
    of junk.
``foreign_channel``
    after a genuine handshake, a channel message for ``--channel`` (a channel between two
    other nodes), which the node must ignore, then an unknown frame kind: the node closes
    on the second, so the first left the link up.
``bad_open``, ``malformed_open``, ``poison_open``
    after a genuine handshake, an "open" the node must refuse (it answers, and may keep
    the link): participants ``--impersonate`` and the node; participants that are not two
    ids; and, with ``--l1-domain``, parameters that would pass every check but hold a
    float in the app options, which a node must not store (its store refuses non-plain
    data when it reads the channel back). ``open_reply`` holds the node's answer and
    ``link_open_after_reply`` whether the node kept the link until this end closed it.
``one_bad_channel`` (only when named)
    with ``--l1-domain``: opens two channels with the node (the counter app, nothing
    deposited), sends a proposal with a forged signature on the first, then proposes on
    the second over the same link (``second_channel_signed``: the node counter-signed),
    and the first one's genuine proposal (``first_channel_answered_after``); ``link_up``
    says whether the node kept the link all along.
``hello_flood`` (only when named)
    with ``--l1-domain``: opens a channel with the node, commits 30 updates on it, then
    sends 50 HELLOs saying it has nothing; ``entries_served`` and ``bytes_served`` count
    the log the node sent back (``log_entries`` long).
``slowloris``
    ``--slowloris`` connections that never finish the handshake (silent, a partial hello,
    or a hello trickled a byte at a time). Once they are all open it writes
    ``OUTDIR/slowloris.open``, times a genuine handshake made meanwhile
    (``honest_handshake_seconds``), then waits for the node to drop every one of them
    (``closed``, ``still_open``, ``close_seconds`` min/max).

The script exits 0 once the report is written, whatever the node did: the test judges.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
from bfs_smr.adapters.memory import MemoryFormat
from hostile import colliding_key_map, shared_reference_bomb

from bfs_smr import Channel, ChannelParams, Ed25519, SendMessage, Signer, decode, encode
from bfs_smr._messages import Accept, Entries, Hello, Propose, encode_message, parse_message
from bfs_smr.runtime import load_app
from bfs_smr.runtime import transport as t
from bfs_smr.runtime._logging import configure_logging
from bfs_smr.runtime.tower import watch_secret

CHANNEL_FRAME = b"\x01"
NODE_FRAME = b"\x02"
HELLO_SIZE = len(t.MAGIC) + 1 + 32
REPLY_SIZE = 32 + 32 + 64 + 16

Result = dict[str, Any]


class Attacker:
    def __init__(self, host: str, port: int, victim: bytes, args: argparse.Namespace) -> None:
        self.host, self.port, self.victim = host, port, victim
        self.identity = Signer(Ed25519(), os.urandom(32))
        self.channel = bytes.fromhex(args.channel) if args.channel else os.urandom(32)
        self.other = bytes.fromhex(args.impersonate) if args.impersonate else os.urandom(32)
        self.l1_domain = bytes.fromhex(args.l1_domain) if args.l1_domain else None
        self.close_timeout: float = args.close_timeout
        self.slowloris_count: int = args.slowloris
        self.outdir = Path(args.outdir)
        self.recorded = b""  # the client-to-node bytes of the first genuine connection

    # -- plumbing -----------------------------------------------------------------------

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Result]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        host, port = writer.get_extra_info("sockname")[:2]
        return reader, writer, {"local_address": f"{host}:{port}"}

    async def handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        expected: bytes | None = None,
    ) -> tuple[t.SecureSession, bytes]:
        """A genuine handshake as initiator; returns the session and the bytes sent.

        The node announces its channel key as soon as its end is established, so that
        frame may arrive in the same read as the handshake's last message; it is checked
        here and dropped. Any other frame is the node speaking out of turn.
        """
        session = t.SecureSession.initiator(self.identity, expected or self.victim)
        sent = bytearray()
        out = session.data_to_send()
        while True:
            if out:
                writer.write(out)
                sent += out
                await writer.drain()
            if session.established:
                return session, bytes(sent)
            data = await asyncio.wait_for(reader.read(1 << 16), self.close_timeout)
            if not data:
                session.receive_eof()  # raises: the node ended the connection
            for frame in session.receive_data(data):
                message = decode(frame[1:])
                assert frame[:1] == NODE_FRAME and message[0] == "account", message
            out = session.data_to_send()

    async def wait_close(
        self,
        reader: asyncio.StreamReader,
        session: t.SecureSession | None,
        result: Result,
        *,
        since: float | None = None,
    ) -> Result:
        """Read until the node closes the connection (or the timeout); fill ``result``."""
        start = time.monotonic() if since is None else since
        frames: list[bytes] = []
        outcome = "open"
        try:
            async with asyncio.timeout(self.close_timeout):
                while True:
                    data = await reader.read(1 << 16)
                    if not data:
                        outcome = "eof"
                        break
                    if session is not None and not session.failed:
                        try:
                            frames += session.receive_data(data)
                        except t.TransportError as exc:
                            result["receive_error"] = exc.reason
        except TimeoutError:
            outcome = "open"
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        result["outcome"] = outcome
        result["closed_by_victim"] = outcome != "open"
        result["seconds"] = round(time.monotonic() - start, 3)
        result["close_reason"] = session.peer_close_reason if session is not None else None
        result["frames"] = [f.hex()[:200] for f in frames]
        return result

    @staticmethod
    def done(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            writer.close()

    async def raw(self, payload: bytes) -> Result:
        """Send ``payload`` instead of a handshake; see what the node does."""
        reader, writer, result = await self.connect()
        try:
            start = time.monotonic()
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return await self.wait_close(reader, None, result, since=start)
        finally:
            self.done(writer)

    async def after_handshake(self, wire: Any) -> Result:
        """Handshake genuinely, then write ``wire(session)`` (bytes) raw."""
        reader, writer, result = await self.connect()
        try:
            session, _ = await self.handshake(reader, writer)
            result["established"] = True
            start = time.monotonic()
            writer.write(wire(session))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return await self.wait_close(reader, session, result, since=start)
        finally:
            self.done(writer)

    async def frame(self, payload: bytes) -> Result:
        return await self.after_handshake(lambda s: s.send(payload))

    # -- the attacks ----------------------------------------------------------------------

    async def genuine(self) -> Result:
        reader, writer, result = await self.connect()
        try:
            try:
                session, sent = await self.handshake(reader, writer)
            except (t.TransportError, TimeoutError, ConnectionError) as exc:
                result["established"] = False
                result["handshake_error"] = getattr(exc, "reason", None) or repr(exc)
                return await self.wait_close(reader, None, result)
            result["established"] = True
            goodbye = session.close("byzantine peer says goodbye")
            writer.write(goodbye)
            await writer.drain()
            self.recorded = self.recorded or sent + goodbye
            result = await self.wait_close(reader, session, result)
            result["closed_by_victim"] = False  # this end closed first
            return result
        finally:
            self.done(writer)

    async def garbage(self) -> Result:
        junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(200)
        return await self.raw(junk)

    async def bad_version(self) -> Result:
        return await self.raw(t.MAGIC + bytes([t.VERSION + 99]) + os.urandom(32))

    async def low_order_key(self) -> Result:
        return await self.raw(t.MAGIC + bytes([t.VERSION]) + bytes(32))

    async def replay(self) -> Result:
        if not self.recorded:
            await self.genuine()
        result = await self.raw(self.recorded)
        result["replayed_bytes"] = len(self.recorded)
        return result

    async def impersonate(self) -> Result:
        """Claim ``self.other``'s identity in ``auth``; sign with the only key we have."""
        reader, writer, result = await self.connect()
        try:
            e_public, e_secret = sodium.crypto_box_keypair()
            writer.write(t.MAGIC + bytes([t.VERSION]) + e_public)
            reply = await asyncio.wait_for(reader.readexactly(REPLY_SIZE), self.close_timeout)
            e_r = reply[:32]
            shared = t._dh(e_secret, e_r)
            th1 = t._hash(t._P_TH1, t.MAGIC, bytes([t.VERSION]), e_public, e_r)
            plain = t._open(t._kdf(shared, t._P_HS2, th1), th1, reply[32:], "reply")
            id_r, sig_r = plain[:32], plain[32:]
            result["responder_id"] = id_r.hex()
            th2 = t._hash(t._P_TH2, th1, id_r, sig_r)
            claimed = self.other
            sig_i = self.identity.sign(t._hash(t._P_SIG_I, th2, claimed))
            header_i = os.urandom(24)
            auth = t._seal(t._kdf(shared, t._P_HS3, th2), th2, claimed + sig_i + header_i)
            start = time.monotonic()
            writer.write(auth)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            result["claimed_id"] = claimed.hex()
            return await self.wait_close(reader, None, result, since=start)
        finally:
            self.done(writer)

    async def wrong_expected_id(self) -> Result:
        start = time.monotonic()
        result: Result = {}
        try:
            link = await t.dial(self.host, self.port, self.identity, self.other, timeout=5.0)
        except t.TransportError as exc:
            result["dial_error"] = exc.reason
            result["closed_by_victim"] = None  # this end refused the node
            result["outcome"] = "refused by this end"
        else:  # the node claimed to be someone it is not: a failure of the node
            result["dial_error"] = None
            result["outcome"] = "dialled"
            link.close("unexpected")
        result["seconds"] = round(time.monotonic() - start, 3)
        return result

    async def oversized_length(self) -> Result:
        return await self.after_handshake(lambda s: b"\xff\xff\xff\xff")

    async def tampered_frame(self) -> Result:
        def wire(s: t.SecureSession) -> bytes:
            frame = bytearray(s.send(NODE_FRAME + encode(["open-reply", bytes(32), None])))
            frame[len(frame) // 2] ^= 0x01
            return bytes(frame)

        return await self.after_handshake(wire)

    async def reordered_frames(self) -> Result:
        def wire(s: t.SecureSession) -> bytes:
            first = s.send(NODE_FRAME + encode(["nothing", 1]))
            second = s.send(NODE_FRAME + encode(["nothing", 2]))
            return second + first

        return await self.after_handshake(wire)

    async def undecodable_node_message(self) -> Result:
        return await self.frame(NODE_FRAME + b"\x1c\xff\xfe not cbor")

    async def unknown_frame_kind(self) -> Result:
        return await self.frame(b"\x07" + b"what is this")

    async def empty_frame(self) -> Result:
        return await self.frame(b"")

    async def foreign_channel(self) -> Result:
        # The node ignores it (the link carries other channels); the unknown frame kind
        # after it shows the link was still up to close on that instead.
        foreign = CHANNEL_FRAME + self.channel + encode(["update", 1, b"x"])
        return await self.after_handshake(lambda s: s.send(foreign) + s.send(b"\x07probe"))

    async def big_junk(self) -> Result:
        junk = NODE_FRAME + os.urandom(t.MAX_FRAME - 1)
        result = await self.frame(junk)
        result["payload_bytes"] = len(junk)
        return result

    async def shared_refs(self) -> Result:
        # ~400 bytes that cbor2 decodes into a DAG of 2**40 paths (tags 28/29): walked as a
        # tree it froze the node (issue 11, defect 1). The node refuses any tag.
        result = await self.frame(NODE_FRAME + shared_reference_bomb(40))
        return result

    async def colliding_keys(self) -> Result:
        # A map whose 2,000 integer keys all hash alike in Python (multiples of 2**61 - 1,
        # as tag-2 bignums): quadratic to build as a dict (issue 11, defect 2).
        return await self.frame(NODE_FRAME + colliding_key_map(2_000))

    async def _open(self, params_value: Any) -> Result:
        """Send an "open"; wait for the node's reply, then close the link from this end."""
        reader, writer, result = await self.connect()
        try:
            session, _ = await self.handshake(reader, writer)
            result["established"] = True
            if self.l1_domain is not None:  # announce a channel key, as an honest node does
                account = ["account", self.l1_domain, self.identity.public_key]
                writer.write(session.send(NODE_FRAME + encode(account)))
            writer.write(session.send(NODE_FRAME + encode(["open", params_value])))
            await writer.drain()
            frames: list[bytes] = []
            ended = False
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(min(5.0, self.close_timeout)):
                    while not frames and session.peer_close_reason is None:
                        data = await reader.read(1 << 16)
                        if not data:
                            ended = True
                            break
                        # The victim announces its own channel key first: not the reply.
                        frames += [
                            f for f in session.receive_data(data) if decode(f[1:])[0] != "account"
                        ]
            reply = decode(frames[0][1:]) if frames else None
            result["open_reply"] = (
                {"channel": reply[1].hex(), "refused": reply[2]} if reply else None
            )
            if ended or session.peer_close_reason is not None:  # closed instead of answering
                result.update(outcome="eof", closed_by_victim=True, link_open_after_reply=False)
                result["close_reason"] = session.peer_close_reason
                return result
            result["link_open_after_reply"] = True
            writer.write(session.close("byzantine peer done"))
            await writer.drain()
            result = await self.wait_close(reader, session, result)
            result["closed_by_victim"] = False  # this end closed first
            return result
        finally:
            self.done(writer)

    def _params(
        self, participants: tuple[bytes, bytes], app: str = "payments", **options: Any
    ) -> ChannelParams:
        params = ChannelParams(
            l1=self.l1_domain or os.urandom(32),
            participants=participants,
            deposits=(0, 0),
            app=app,
            app_version=1,
            options=options,
            nonce=int.from_bytes(os.urandom(7), "big"),
            challenge_window=86_400,
        )
        # The watch commitment the victim derives with this peer: what it asks for.
        secret = watch_secret(self.identity, self.victim, params)
        return dataclasses.replace(params, watch=MemoryFormat(params.l1).watch_commitment(secret))

    async def bad_open(self) -> Result:
        params = self._params((self.other, self.victim))  # the opener is not this peer
        result = await self._open(params.to_value())
        result["channel"] = params.channel_id.hex()
        return result

    async def malformed_open(self) -> Result:
        value = self._params((self.identity.public_key, self.victim)).to_value()
        value[1] = []  # participants: not two ids
        return await self._open(value)

    async def poison_open(self) -> Result:
        if self.l1_domain is None:
            return {"skipped": "no --l1-domain given"}
        params = self._params((self.identity.public_key, self.victim), note=1.5)
        result = await self._open(params.to_value())
        result["channel"] = params.channel_id.hex()
        return result

    async def _channels(self, count: int, result: Result) -> tuple[_Frames, list[Channel]]:
        """A link on which this peer opened ``count`` channels with the node (the counter
        app, nothing deposited), each with its opening update doubly signed; fewer if the
        node refused (``result`` says why)."""
        assert self.l1_domain is not None
        fmt = MemoryFormat(self.l1_domain)  # a local L1 signs as the in-memory one does
        reader, writer, _ = await self.connect()
        link = _Frames(reader, writer, await self.handshake(reader, writer))
        result["established"] = True
        await link.send(NODE_FRAME + encode(["account", self.l1_domain, self.identity.public_key]))
        chans: list[Channel] = []
        for _ in range(count):
            params = self._params((self.identity.public_key, self.victim), app="counter")
            await link.send(NODE_FRAME + encode(["open", params.to_value()]))
            reply = await link.expect(lambda f: f[:1] == NODE_FRAME and b"open-reply" in f)
            if reply is None or decode(reply[1:])[2] is not None:
                result["open_refused"] = None if reply is None else reply.hex()
                break
            chan = Channel(params, load_app("counter"), fmt, self.identity)
            chan.start()
            if not await link.exchange(chan):
                result["not_opened"] = params.channel_id.hex()
                break
            chans.append(chan)
        result["channels"] = [c.channel_id.hex() for c in chans]
        return link, chans

    async def one_bad_channel(self) -> Result:
        """Open two channels with the node, break the protocol on the first, then use the
        second over the same link; see whether the node still answers on each."""
        if self.l1_domain is None:
            return {"skipped": "no --l1-domain given"}
        result: Result = {}
        link, chans = await self._channels(2, result)
        try:
            if len(chans) < 2:
                return result
            first, second = chans
            # The first channel: a proposal whose state hash is not the re-execution's.
            first.issue({"inc": 1})
            genuine = _sent(first)[0]
            update = dataclasses.replace(parse_message(genuine).update, state_hash=bytes(32))
            forged = Propose(channel_id=first.channel_id, update=update, tag=bytes(32))
            await link.send(CHANNEL_FRAME + first.channel_id + encode_message(forged))
            # The second channel goes on over the same link.
            second.issue({"inc": 2})
            result["second_channel_signed"] = await link.exchange(second)
            # The first one's genuine proposal now goes unanswered on this link.
            await link.send(CHANNEL_FRAME + first.channel_id + genuine)
            answer = await link.expect(lambda f: f[1:33] == first.channel_id, timeout=2.0)
            result["first_channel_answered_after"] = answer is not None
            result["link_up"] = not link.ended and link.session.peer_close_reason is None
            await link.close()
            return result
        finally:
            result["close_reason"] = link.session.peer_close_reason
            self.done(link.writer)

    async def hello_flood(self) -> Result:
        """Open a channel, commit ``HELLO_FLOOD_UPDATES`` updates on it, then send
        ``HELLO_FLOOD`` HELLOs saying this peer has nothing (next_seq 0); count the log
        entries (``entries_served``) and bytes (``bytes_served``) the node sends back."""
        if self.l1_domain is None:
            return {"skipped": "no --l1-domain given"}
        result: Result = {"hellos": HELLO_FLOOD}
        link, chans = await self._channels(1, result)
        try:
            if not chans:
                return result
            chan = chans[0]
            for _ in range(HELLO_FLOOD_UPDATES):
                chan.issue({"inc": 1})
                if not await link.exchange(chan):
                    result["not_signed"] = chan.seq + 1
                    return result
            hello = Hello(
                channel_id=chan.channel_id, next_seq=0, head_hash=bytes(32), signed_next=0
            )
            frame = CHANNEL_FRAME + chan.channel_id + encode_message(hello)
            for _ in range(HELLO_FLOOD):  # apart, so the node reads them one at a time
                await link.send(frame)
                await asyncio.sleep(0.01)
            served = entries = 0
            while (got := await link.expect(lambda f: True, timeout=3.0)) is not None:
                message = parse_message(got[33:]) if got[:1] == CHANNEL_FRAME else None
                if isinstance(message, Entries):
                    served += len(got)
                    entries += len(message.entries)
            result.update(entries_served=entries, bytes_served=served, log_entries=chan.seq + 1)
            result["link_up"] = not link.ended and link.session.peer_close_reason is None
            await link.close()
            return result
        finally:
            self.done(link.writer)

    async def slowloris(self) -> Result:
        count = self.slowloris_count
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, Result]] = []
        opened = time.monotonic()
        for i in range(count):
            reader, writer, result = await self.connect()
            result["style"] = ("silent", "partial hello", "trickle")[i % 3]
            if result["style"] == "partial hello":
                writer.write((t.MAGIC + bytes([t.VERSION]) + os.urandom(32))[: HELLO_SIZE - 1])
            conns.append((reader, writer, result))
        hello = t.MAGIC + bytes([t.VERSION]) + os.urandom(32)

        async def trickle(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                for byte in hello[: HELLO_SIZE - 1]:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.25)

        tricklers = [
            asyncio.create_task(trickle(w)) for _, w, r in conns if r["style"] == "trickle"
        ]
        (self.outdir / "slowloris.open").write_text(str(count))
        # Meanwhile an honest handshake must go through at once.
        start = time.monotonic()
        honest = await self.genuine()
        honest_seconds = round(time.monotonic() - start, 3)
        watched = await asyncio.gather(
            *(self.wait_close(r, None, res, since=opened) for r, _, res in conns)
        )
        for task in tricklers:
            task.cancel()
        await asyncio.gather(*tricklers, return_exceptions=True)
        for _, writer, _ in conns:
            self.done(writer)
        seconds = [w["seconds"] for w in watched if w["closed_by_victim"]]
        still_open = sum(1 for w in watched if not w["closed_by_victim"])
        return {
            "connections": count,
            "closed": len(seconds),
            "still_open": still_open,
            "closed_by_victim": still_open == 0,
            "outcome": "all closed" if still_open == 0 else f"{still_open} still open",
            "close_seconds": {"min": min(seconds, default=None), "max": max(seconds, default=None)},
            "honest_handshake_established": honest.get("established"),
            "honest_handshake_seconds": honest_seconds,
            "local_addresses": [w["local_address"] for w in watched],
            "styles": sorted({w["style"] for w in watched}),
        }


def _sent(chan: Channel) -> list[bytes]:
    return [e.data for e in chan.effects() if isinstance(e, SendMessage)]


class _Frames:
    """Frames to and from the node over one established session."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: tuple[t.SecureSession, bytes],
    ) -> None:
        self.reader, self.writer = reader, writer
        self.session = handshake[0]
        self.inbox: list[bytes] = []
        self.ended = False

    async def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(self.session.send(f) for f in frames))
        await self.writer.drain()

    async def expect(self, wanted: Any, timeout: float = 10.0) -> bytes | None:
        """The first frame from the node that ``wanted`` accepts (others are kept), or
        None if none came within ``timeout`` or the node ended the connection."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while True:
                    for i, frame in enumerate(self.inbox):
                        if wanted(frame):
                            return self.inbox.pop(i)
                    data = await self.reader.read(1 << 16)
                    if not data:
                        self.ended = True
                        return None
                    self.inbox += self.session.receive_data(data)
        return None

    async def close(self) -> None:
        self.writer.write(self.session.close("byzantine peer done"))
        await self.writer.drain()

    async def exchange(self, chan: Channel) -> bool:
        """Send ``chan``'s proposal and take the node's counter-signature; whether the
        proposal got one."""
        seq = chan.seq
        prefix = CHANNEL_FRAME + chan.channel_id
        await self.send(*(prefix + data for data in _sent(chan)))
        answer = await self.expect(
            lambda f: f.startswith(prefix) and isinstance(parse_message(f[33:]), Accept)
        )
        if answer is None:
            return False
        chan.receive(answer[33:])
        # The COMMIT: the node signed first; this makes the update doubly signed there.
        await self.send(*(prefix + data for data in _sent(chan)))
        return chan.seq == seq + 1


ATTACKS = [
    "genuine",
    "garbage",
    "bad_version",
    "low_order_key",
    "replay",
    "impersonate",
    "wrong_expected_id",
    "oversized_length",
    "tampered_frame",
    "reordered_frames",
    "undecodable_node_message",
    "unknown_frame_kind",
    "empty_frame",
    "foreign_channel",
    "big_junk",
    "shared_refs",
    "colliding_keys",
    "bad_open",
    "malformed_open",
    "poison_open",
    "slowloris",
]
#: Run only when named in ``--attacks``.
MORE_ATTACKS = ["one_bad_channel", "hello_flood"]
HELLO_FLOOD = 50
HELLO_FLOOD_UPDATES = 30


async def main(args: argparse.Namespace) -> dict[str, Any]:
    host, _, port = args.target.rpartition(":")
    attacker = Attacker(host, int(port), bytes.fromhex(args.victim_id), args)
    names = args.attacks.split(",") if args.attacks else ATTACKS
    unknown = set(names) - set(ATTACKS + MORE_ATTACKS)
    if unknown:
        raise SystemExit(f"unknown attacks: {sorted(unknown)}")
    report: dict[str, Any] = {
        "attacker_id": attacker.identity.public_key.hex(),
        "victim": args.target,
        "attacks": {},
    }
    for name in names:
        start = time.monotonic()
        try:
            result = await getattr(attacker, name)()
        except Exception as exc:  # noqa: BLE001 - reported; the test decides
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result = {
                "error": f"{type(exc).__name__}: {exc}",
                "at": f"{Path(where.filename).name}:{where.lineno} ({where.name})",
            }
        result["attack_seconds"] = round(time.monotonic() - start, 3)
        report["attacks"][name] = result
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", metavar="HOST:PORT")
    p.add_argument("victim_id", metavar="VICTIM_NODE_ID")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--channel", help="a channel id between two other nodes")
    p.add_argument("--impersonate", metavar="NODE_ID", help="another node's id to claim")
    p.add_argument("--l1-domain", metavar="HEX", help="the victim's L1 domain (poison_open)")
    p.add_argument("--attacks", help=f"comma-separated, of: {', '.join(ATTACKS)}")
    p.add_argument("--slowloris", type=int, default=50, metavar="N")
    p.add_argument("--close-timeout", type=float, default=15.0, metavar="SECONDS")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    configure_logging(json=True, level="warning")  # the transport's logs go to stderr
    out = Path(arguments.outdir)
    out.mkdir(parents=True, exist_ok=True)
    final = asyncio.run(main(arguments))
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(final, indent=2) + "\n")
    tmp.replace(out / "report.json")
    print(json.dumps({"report": str(out / "report.json")}), flush=True)
