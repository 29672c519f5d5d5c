"""An authenticated, encrypted transport between two channel nodes over TCP.

docs/design.md §6: the network may drop, delay, reorder, duplicate or read traffic, so the
transport authenticates the peer by its long-term Ed25519 identity (a node's id is its
32-byte public key) and encrypts and authenticates every frame. Two layers:

* :class:`SecureSession` — sans-IO (like h11): received bytes in, decrypted application
  frames out; handshake messages are queued for :meth:`SecureSession.data_to_send`, and
  :meth:`SecureSession.send` returns the bytes of one encrypted frame. No sockets, no
  clock: the handshake timeout belongs to whoever drives it.
* :func:`dial`, :func:`serve` and :class:`Link` — a thin :class:`asyncio.Protocol` layer
  (protocols rather than streams, for low per-frame overhead) with ``TCP_NODELAY``.

Handshake
---------
Four fixed-size messages (a SIGMA-I / Noise-XX-like exchange: ephemeral Diffie-Hellman,
identities hidden from passive observers, each side signing the transcript)::

    I -> R  hello    MAGIC(8) ‖ VERSION(1) ‖ e_i(32)                              41 bytes
    R -> I  reply    e_r(32) ‖ AEAD(k2, ad=th1;  id_r ‖ sig_r)                    144 bytes
    I -> R  auth     AEAD(k3, ad=th2;  id_i ‖ sig_i ‖ header_i)                   136 bytes
    R -> I  confirm  AEAD(k4, ad=th3;  header_r)                                   40 bytes

``e_i`` and ``e_r`` are fresh X25519 public keys, ``ss = X25519(e_i, e_r)`` (refused if
either key is a low-order point). With ``H(label, x)`` = BLAKE2b-256 of ``x`` personalised
with ``label`` and ``KDF(label, th)`` = BLAKE2b-256 of ``th`` keyed with ``ss`` and
personalised with ``label`` (every label is distinct and starts ``bfs-smr/t/``)::

    th1   = H(th1, hello ‖ e_r)
    sig_r = Sign_r(H(sig-r, th1 ‖ id_r))      k2 = KDF(k-hs2, th1)
    th2   = H(th2, th1 ‖ id_r ‖ sig_r)
    sig_i = Sign_i(H(sig-i, th2 ‖ id_i))      k3 = KDF(k-hs3, th2)
    th3   = H(th3, th2 ‖ id_i ‖ sig_i)
    k4 = KDF(k-hs4, th3)   k_i2r = KDF(k-i2r, th3)   k_r2i = KDF(k-r2i, th3)

AEAD is ChaCha20-Poly1305 (IETF) with a zero nonce: each handshake key encrypts exactly
one message. Each side signs the whole transcript so far, both ephemerals included, so a
signature is valid in one session only; the initiator's signature also covers the
responder's identity and signature, so both agree on who talks to whom. The session keys
come from ``th3``, which binds the version, both ephemerals, both identities and both
signatures. The initiator refuses a responder that is not ``expected_peer`` ("wrong
identity"); the responder refuses an initiator that ``allow`` rejects ("unknown
identity"), after checking its signature. ``confirm`` tells the initiator that it was
accepted, so :func:`dial` returns only a link the responder took; a refused initiator sees
the connection close instead.

What this gives, and why:

* Replay: a recorded ``hello ‖ auth`` sent to a new connection meets a fresh ``e_r``, so
  ``auth`` fails to decrypt under the new ``k3``; a recorded ``reply`` fails the same way
  against a fresh ``e_i``.
* Forward secrecy: the ephemerals live only for the handshake; a later theft of an
  identity key does not decrypt recorded sessions.
* Identity hiding: both identities travel encrypted (a passive observer sees neither; an
  active one can learn the initiator's only by holding the responder's key).
* Cross-protocol: transport signatures are over a personalised BLAKE2b hash that no other
  bfs-smr signature uses, so a node may sign channel updates with its identity key too.
* Reflection: the two signatures and the two directions use different labels.

Frames
------
After the handshake each direction is one libsodium ``secretstream_xchacha20poly1305``
stream (keys ``k_i2r`` / ``k_r2i``; the random 24-byte stream headers travel inside
``auth`` and ``confirm``). A frame on the wire is::

    length(4, big-endian) ‖ ciphertext(length)      ciphertext = payload + 17 bytes

with the 4-byte length as associated data. The stream state advances with every frame, so
a tampered, dropped, reordered, duplicated or truncated frame fails authentication and the
connection is closed. A declared length over ``max_frame + 17`` (``max_frame`` bounds the
payload) is refused as soon as the four length bytes arrive, before any of the body is
buffered; both ends must use the same ``max_frame``. A local close sends a last frame
tagged ``FINAL`` carrying a short reason, so the peer can tell a deliberate close from a
cut connection (an end of stream without it is reported as an error).

Failures and who is at fault
----------------------------
Every violation raises :class:`TransportError` with a one-line reason and fails the session
for good. It derives from :class:`~bfs_smr.BfsSmrError`, not from ``RemoteViolation``: a
broken connection may be the network's or an attacker's doing rather than the
counterparty's, and must not by itself send a channel to L1. Secret keys (identity,
ephemeral, session) are never logged or shown in ``repr``; ephemeral and handshake secrets
are dropped once used (Python cannot promise to zero memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import socket
from collections.abc import Callable, Iterable
from typing import Any

import nacl.bindings as _sodium
import nacl.exceptions
import structlog

from bfs_smr._crypto import Ed25519, Signer
from bfs_smr._errors import BfsSmrError, LocalError

__all__ = [
    "KEEPALIVE",
    "MAX_FRAME",
    "MAX_HANDSHAKES",
    "MAX_HANDSHAKES_PER_HOST",
    "Link",
    "SecureSession",
    "TransportError",
    "dial",
    "serve",
]

MAGIC = b"bfssmr-t"
VERSION = 1
MAX_FRAME = 4 * 1024 * 1024
"""Default largest application payload of one frame, in bytes."""

_log = structlog.get_logger("bfs_smr.transport")

MAX_HANDSHAKES = 256
"""Default most handshakes :func:`serve` runs at once; more connections are refused."""
MAX_HANDSHAKES_PER_HOST = 64
"""Default most handshakes :func:`serve` runs at once for one peer address."""
KEEPALIVE = (30, 10, 3)
"""TCP keepalive on every connection: idle seconds, probe interval, probes. A peer that
vanished without closing (power cut, network gone) is noticed after about a minute."""

_ID = 32  # an Ed25519 public key: the node id
_SIG = 64
_KEY = 32  # an X25519 public key, and every derived key
_TAG = 16  # ChaCha20-Poly1305 tag
_HEADER: int = _sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES: int = _sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_MESSAGE: int = _sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: int = _sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_ZERO_NONCE = bytes(12)
_MAX_WIRE = 0xFFFF_FFFF  # what a 4-byte length can declare
_CLOSE_REASON_MAX = 200  # bytes of a close reason sent to the peer

_push = _sodium.crypto_secretstream_xchacha20poly1305_push
_pull = _sodium.crypto_secretstream_xchacha20poly1305_pull
_new_stream = _sodium.crypto_secretstream_xchacha20poly1305_state
_ED25519 = Ed25519()


class TransportError(BfsSmrError):
    """The connection is unusable: the peer, the network or a timeout broke it.

    ``reason`` is one human-readable line. Nothing received after the fault is delivered.
    """


# Personalisation labels (BLAKE2b takes up to 16 bytes).
_P_TH1, _P_TH2, _P_TH3 = b"bfs-smr/t/th1", b"bfs-smr/t/th2", b"bfs-smr/t/th3"
_P_SIG_R, _P_SIG_I = b"bfs-smr/t/sig-r", b"bfs-smr/t/sig-i"
_P_HS2, _P_HS3, _P_HS4 = b"bfs-smr/t/k-hs2", b"bfs-smr/t/k-hs3", b"bfs-smr/t/k-hs4"
_P_I2R, _P_R2I = b"bfs-smr/t/k-i2r", b"bfs-smr/t/k-r2i"


def _hash(label: bytes, *parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=label)
    for part in parts:
        h.update(part)
    return h.digest()


def _kdf(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hashlib.blake2b(transcript, digest_size=32, key=secret, person=label).digest()


def _seal(key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    sealed: bytes = _sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, ad, _ZERO_NONCE, key
    )
    return sealed


def _open(key: bytes, ad: bytes, sealed: bytes, what: str) -> bytes:
    try:
        plain: bytes = _sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
            sealed, ad, _ZERO_NONCE, key
        )
    except nacl.exceptions.CryptoError:
        raise TransportError(
            f"handshake {what} failed authentication (tampered, replayed or from another session)"
        ) from None
    return plain


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        shared: bytes = _sodium.crypto_scalarmult(secret, public)
    except nacl.exceptions.CryptoError:  # libsodium refuses an all-zero result
        raise TransportError("bad ephemeral key (a low-order point)") from None
    return shared


def _short(node_id: bytes) -> str:
    return node_id.hex()[:16] + "…"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _check_identity(identity: Signer) -> None:
    if not isinstance(identity, Signer) or not isinstance(identity.scheme, Ed25519):
        raise LocalError("a transport identity is a Signer with the Ed25519 scheme")


class _State(enum.Enum):
    AWAIT_MAGIC = "awaiting magic and version"  # responder
    AWAIT_HELLO = "awaiting hello"  # responder
    AWAIT_REPLY = "awaiting reply"  # initiator
    AWAIT_AUTH = "awaiting auth"  # responder
    AWAIT_CONFIRM = "awaiting confirm"  # initiator
    ESTABLISHED = "established"
    PEER_CLOSED = "closed by the peer"
    FAILED = "failed"


class SecureSession:
    """One end of one connection, sans-IO: bytes in, frames and bytes out.

    Build one with :meth:`initiator` or :meth:`responder`. Feed every received byte to
    :meth:`receive_data`, write out :meth:`data_to_send` after each call (the handshake),
    and once :attr:`established`, encrypt with :meth:`send` / :meth:`send_many`.

    Attributes:
        peer_id: the peer's authenticated node id, once established (else ``None``).
        peer_close_reason: the reason the peer gave in its close frame, once received.
        max_frame: the largest payload of one frame, either way.
    """

    __slots__ = (
        "_allow",
        "_buf",
        "_can_send",
        "_claimed_peer",
        "_e_public",
        "_e_secret",
        "_expected",
        "_failure",
        "_final_sent",
        "_hs_key",
        "_identity",
        "_initiator",
        "_max_wire",
        "_need",
        "_outbox",
        "_rx",
        "_rx_key",
        "_shared",
        "_state",
        "_transcript",
        "_tx",
        "max_frame",
        "peer_close_reason",
        "peer_id",
    )

    def __init__(
        self,
        identity: Signer,
        *,
        initiator: bool,
        expected_peer: bytes | None = None,
        allow: Callable[[bytes], bool] | None = None,
        max_frame: int = MAX_FRAME,
    ) -> None:
        _check_identity(identity)
        if initiator and (not isinstance(expected_peer, bytes) or len(expected_peer) != _ID):
            raise LocalError("an initiator needs the expected peer's 32-byte node id")
        if not isinstance(max_frame, int) or not 0 <= max_frame <= _MAX_WIRE - _ABYTES:
            raise LocalError(f"max_frame must be between 0 and {_MAX_WIRE - _ABYTES}")
        self._identity = identity
        self._initiator = initiator
        self._expected = expected_peer
        self._allow = allow
        self.max_frame = max_frame
        self._max_wire = max_frame + _ABYTES
        self.peer_id: bytes | None = None
        self.peer_close_reason: str | None = None
        self._buf = bytearray()
        self._need = 0  # buffered bytes needed before parsing is worth trying
        self._outbox: list[bytes] = []
        self._failure: str | None = None
        self._claimed_peer: bytes | None = None
        # Handshake secrets, dropped once used.
        self._e_secret: bytes | None = None
        self._e_public = b""
        self._shared = b""
        self._transcript = b""
        self._hs_key = b""
        self._rx_key = b""
        self._rx: Any = None
        self._tx: Any = None
        self._can_send = False  # established, and not closed or failed since
        self._final_sent = False
        if initiator:
            self._e_public, self._e_secret = _sodium.crypto_box_keypair()
            self._outbox.append(MAGIC + bytes([VERSION]) + self._e_public)
            self._state = _State.AWAIT_REPLY
        else:
            self._state = _State.AWAIT_MAGIC

    @classmethod
    def initiator(
        cls, identity: Signer, expected_peer: bytes, *, max_frame: int = MAX_FRAME
    ) -> SecureSession:
        """The dialling end: it refuses any responder but ``expected_peer``."""
        return cls(identity, initiator=True, expected_peer=expected_peer, max_frame=max_frame)

    @classmethod
    def responder(
        cls,
        identity: Signer,
        *,
        allow: Callable[[bytes], bool] | None = None,
        max_frame: int = MAX_FRAME,
    ) -> SecureSession:
        """The accepting end: it refuses initiators ``allow`` rejects (``None``: anyone)."""
        return cls(identity, initiator=False, allow=allow, max_frame=max_frame)

    @property
    def established(self) -> bool:
        """Whether the handshake is complete and the peer has not closed or failed."""
        return self._state is _State.ESTABLISHED

    @property
    def failed(self) -> str | None:
        """The reason the session failed, or ``None``."""
        return self._failure

    def __repr__(self) -> str:  # never a key
        role = "initiator" if self._initiator else "responder"
        peer = f", peer={_short(self.peer_id)}" if self.peer_id else ""
        return f"SecureSession({role}, {self._state.value}{peer})"

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[bytes]:
        """Consume received bytes; return the application frames they complete, in order.

        Raises:
            TransportError: the bytes break the protocol; the session is failed for good
                and frames decrypted earlier in the same call are dropped.
        """
        try:
            if self._state is _State.ESTABLISHED:
                return self._receive_frames(data)
            if self._state is _State.FAILED:
                raise TransportError(f"the session already failed: {self._failure}")
            if self._state is _State.PEER_CLOSED:
                if data:
                    raise TransportError("data after the peer's close frame")
                return []
            return self._receive_handshake(data)
        except TransportError as exc:
            self._fail(exc.reason)
            # Drop the inner frames: their locals hold handshake secrets, and a logger that
            # renders locals with tracebacks must not find them.
            raise exc.with_traceback(None) from None

    def receive_eof(self) -> None:
        """Report that the peer ended the byte stream.

        Raises:
            TransportError: the stream ended without the peer's close frame (mid-handshake,
                mid-frame, or just cut: a close that was not the peer's decision).
        """
        if self._state is _State.PEER_CLOSED or self._state is _State.FAILED:
            return
        if self._state is _State.ESTABLISHED:
            where = "in the middle of a frame" if self._buf else "without a close frame"
        elif self._state is _State.AWAIT_CONFIRM:
            where = "during the handshake, instead of accepting this node's identity"
        else:
            where = f"during the handshake ({self._state.value})"
        reason = f"the peer ended the connection {where}"
        self._fail(reason)
        raise TransportError(reason)

    def data_to_send(self) -> bytes:
        """Return (and forget) the handshake bytes queued for the peer."""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        self._state = _State.FAILED
        self._can_send = False
        self._forget_handshake()
        self._rx = None
        if self.peer_id is None:
            self._tx = None  # no close frame before the handshake completed
        self._buf.clear()
        self._outbox.clear()

    def _forget_handshake(self) -> None:
        self._e_secret = None
        self._shared = self._transcript = self._hs_key = self._rx_key = b""

    def _receive_handshake(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        while self._state is not _State.ESTABLISHED:
            size, step, next_state = _HANDSHAKE[self._state]
            if len(buf) < size:
                return []
            message = bytes(buf[:size])
            del buf[:size]
            step(self, message)
            self._state = next_state
        self._forget_handshake()
        self._can_send = True
        if not buf:
            return []
        rest = bytes(buf)
        buf.clear()
        return self._receive_frames(rest)

    def _receive_frames(self, data: bytes) -> list[bytes]:
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        frames: list[bytes] = []
        size = len(data)
        pos = 0
        limit = self._max_wire
        rx = self._rx
        while size - pos >= 4:
            prefix = data[pos : pos + 4]
            length = int.from_bytes(prefix, "big")
            if length > limit:
                raise TransportError(
                    f"frame declares {length - _ABYTES} bytes, over the {self.max_frame}-byte limit"
                )
            if length < _ABYTES:
                raise TransportError(f"frame of {length} bytes is shorter than its tag")
            end = pos + 4 + length
            if end > size:
                self._need = 4 + length
                break
            try:
                payload, tag = _pull(rx, data[pos + 4 : end], prefix)
            except nacl.exceptions.CryptoError:
                raise TransportError(
                    "frame failed authentication (tampered, dropped, reordered or replayed)"
                ) from None
            pos = end
            if tag != _TAG_MESSAGE:
                self._receive_tag(tag, payload, trailing=size - pos)
                return frames
            frames.append(payload)
        else:
            self._need = 4
        if pos < size:
            buf += data[pos:]
        return frames

    def _receive_tag(self, tag: int, payload: bytes, *, trailing: int) -> None:
        if tag != _TAG_FINAL:
            raise TransportError(f"frame with unexpected stream tag {tag}")
        if trailing:
            raise TransportError("data after the peer's close frame")
        reason = payload[:_CLOSE_REASON_MAX].decode("utf-8", "replace")
        self.peer_close_reason = _printable(reason)
        self._state = _State.PEER_CLOSED
        self._can_send = False
        self._rx = None

    # -- handshake steps (one per state, see _HANDSHAKE) ---------------------------------

    def _on_magic(self, message: bytes) -> None:
        if message[: len(MAGIC)] != MAGIC:
            raise TransportError("wrong magic: not a bfs-smr transport handshake")
        if message[len(MAGIC)] != VERSION:
            raise TransportError(
                f"unsupported transport version {message[len(MAGIC)]} (this end speaks {VERSION})"
            )

    def _on_hello(self, e_i: bytes) -> None:  # responder
        e_r, e_secret = _sodium.crypto_box_keypair()
        self._shared = _dh(e_secret, e_i)
        th1 = _hash(_P_TH1, MAGIC, bytes([VERSION]), e_i, e_r)
        id_r = self._identity.public_key
        sig_r = self._identity.sign(_hash(_P_SIG_R, th1, id_r))
        self._outbox.append(e_r + _seal(_kdf(self._shared, _P_HS2, th1), th1, id_r + sig_r))
        self._transcript = _hash(_P_TH2, th1, id_r, sig_r)

    def _on_reply(self, message: bytes) -> None:  # initiator
        e_r = message[:_KEY]
        assert self._e_secret is not None
        shared = _dh(self._e_secret, e_r)
        self._e_secret = None
        th1 = _hash(_P_TH1, MAGIC, bytes([VERSION]), self._e_public, e_r)
        plain = _open(_kdf(shared, _P_HS2, th1), th1, message[_KEY:], "reply")
        id_r, sig_r = plain[:_ID], plain[_ID:]
        assert self._expected is not None
        if id_r != self._expected:
            raise TransportError(
                f"wrong identity: expected {_short(self._expected)}, the peer is {_short(id_r)}"
            )
        if not _ED25519.verify(id_r, _hash(_P_SIG_R, th1, id_r), sig_r):
            raise TransportError("bad signature from the responder")
        th2 = _hash(_P_TH2, th1, id_r, sig_r)
        id_i = self._identity.public_key
        sig_i = self._identity.sign(_hash(_P_SIG_I, th2, id_i))
        th3 = _hash(_P_TH3, th2, id_i, sig_i)
        self._tx = _new_stream()
        header_i: bytes = _sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._tx, _kdf(shared, _P_I2R, th3)
        )
        self._outbox.append(_seal(_kdf(shared, _P_HS3, th2), th2, id_i + sig_i + header_i))
        self._hs_key = _kdf(shared, _P_HS4, th3)
        self._rx_key = _kdf(shared, _P_R2I, th3)
        self._transcript = th3
        self._claimed_peer = id_r

    def _on_auth(self, message: bytes) -> None:  # responder
        th2, shared = self._transcript, self._shared
        plain = _open(_kdf(shared, _P_HS3, th2), th2, message, "auth")
        id_i, sig_i, header_i = plain[:_ID], plain[_ID : _ID + _SIG], plain[_ID + _SIG :]
        if not _ED25519.verify(id_i, _hash(_P_SIG_I, th2, id_i), sig_i):
            raise TransportError("bad signature from the initiator")
        if self._allow is not None:
            try:
                allowed = self._allow(id_i)
            except Exception as exc:  # noqa: BLE001 - a failing allow() refuses, never admits
                raise TransportError(
                    f"allow() raised {type(exc).__name__} for {_short(id_i)}"
                ) from None
            if not allowed:
                raise TransportError(f"unknown identity {_short(id_i)}")
        th3 = _hash(_P_TH3, th2, id_i, sig_i)
        self._rx = _new_stream()
        _sodium.crypto_secretstream_xchacha20poly1305_init_pull(
            self._rx, header_i, _kdf(shared, _P_I2R, th3)
        )
        self._tx = _new_stream()
        header_r: bytes = _sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._tx, _kdf(shared, _P_R2I, th3)
        )
        self._outbox.append(_seal(_kdf(shared, _P_HS4, th3), th3, header_r))
        self.peer_id = id_i

    def _on_confirm(self, message: bytes) -> None:  # initiator
        header_r = _open(self._hs_key, self._transcript, message, "confirm")
        self._rx = _new_stream()
        _sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._rx, header_r, self._rx_key)
        self.peer_id = self._claimed_peer

    # -- sending -------------------------------------------------------------------------

    def send(self, payload: bytes) -> bytes:
        """Encrypt one application frame; return its bytes for the wire.

        Raises:
            LocalError: not established yet, closed locally, or ``payload`` is over
                ``max_frame`` bytes.
            TransportError: the session failed or the peer closed it.
        """
        if not self._can_send:
            raise self._cannot_send()
        if type(payload) is not bytes:
            payload = bytes(payload)
        if len(payload) > self.max_frame:
            raise LocalError(f"a frame of {len(payload)} bytes is over max_frame {self.max_frame}")
        prefix = (len(payload) + _ABYTES).to_bytes(4, "big")
        ciphertext: bytes = _push(self._tx, payload, prefix)
        return prefix + ciphertext

    def send_many(self, payloads: Iterable[bytes]) -> bytes:
        """Encrypt several frames, in order; return their bytes, concatenated."""
        return b"".join([self.send(payload) for payload in payloads])

    def close(self, reason: str = "") -> bytes:
        """Return the close frame (carrying ``reason``) and refuse further sends.

        Works after a receive failure too, so the peer learns why it was dropped. Returns
        ``b""`` when there is nothing to send it on (the handshake never completed) or it
        was sent already. Receiving still works until the peer stops.
        """
        if self._tx is None or self._final_sent:
            return b""
        note = reason.encode("utf-8")[:_CLOSE_REASON_MAX]
        prefix = (len(note) + _ABYTES).to_bytes(4, "big")
        ciphertext: bytes = _push(self._tx, note, prefix, _TAG_FINAL)
        self._final_sent = True
        self._can_send = False
        return prefix + ciphertext

    def _cannot_send(self) -> BfsSmrError:
        if self._failure is not None:
            return TransportError(f"the session failed: {self._failure}")
        if self._state is _State.PEER_CLOSED:
            return TransportError("the peer closed the link")
        if self._final_sent:
            return LocalError("the link was closed locally")
        return LocalError(f"cannot send before the handshake completes ({self._state.value})")


# The handshake transitions, one row per state: bytes to wait for, step, next state.
# A state missing here (established, closed, failed) is not a handshake state.
_HANDSHAKE: dict[_State, tuple[int, Callable[[SecureSession, bytes], None], _State]] = {
    _State.AWAIT_MAGIC: (len(MAGIC) + 1, SecureSession._on_magic, _State.AWAIT_HELLO),
    _State.AWAIT_HELLO: (_KEY, SecureSession._on_hello, _State.AWAIT_AUTH),
    _State.AWAIT_REPLY: (_KEY + _ID + _SIG + _TAG, SecureSession._on_reply, _State.AWAIT_CONFIRM),
    _State.AWAIT_AUTH: (_ID + _SIG + _HEADER + _TAG, SecureSession._on_auth, _State.ESTABLISHED),
    _State.AWAIT_CONFIRM: (_HEADER + _TAG, SecureSession._on_confirm, _State.ESTABLISHED),
}


# -- asyncio ------------------------------------------------------------------------------


class Link:
    """An established, authenticated connection to one peer.

    Attributes:
        peer_id: the peer's authenticated node id (its Ed25519 public key).
        peer_address: ``host:port`` of the other end of the TCP connection.
        closed: resolves with the reason as soon as the link is closed (local close, the
            peer's close, a violation, or a cut connection); from then on :meth:`send`
            raises. The socket is released in the background, after a final flush.
    """

    __slots__ = (
        "_close_reason",
        "_drain_waiters",
        "_linger",
        "_linger_timer",
        "_loop",
        "_on_frames",
        "_paused",
        "_pending",
        "_session",
        "_transport",
        "closed",
        "peer_address",
        "peer_id",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        session: SecureSession,
        peer_address: str,
        linger: float,
    ) -> None:
        assert session.peer_id is not None
        self.peer_id: bytes = session.peer_id
        self.peer_address = peer_address
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._transport = transport
        self._session = session
        self._on_frames: Callable[[Link, list[bytes]], None] | None = None
        self._pending: list[bytes] = []
        self._close_reason: str | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._linger = linger
        self._linger_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        state = f"closed: {self._close_reason}" if self._close_reason else "open"
        return f"Link({_short(self.peer_id)} at {self.peer_address}, {state})"

    def set_receiver(self, on_frames: Callable[[Link, list[bytes]], None]) -> None:
        """Deliver frames to ``on_frames``: all frames of one read in one call, in order.

        Frames that arrived before are delivered at once, inside this call. If
        ``on_frames`` raises, the link is closed with a reason naming the exception.
        """
        self._on_frames = on_frames
        if self._pending:
            frames, self._pending = self._pending, []
            self._deliver(frames)

    def send(self, payload: bytes) -> None:
        """Encrypt and write one frame (at most ``max_frame`` bytes).

        Raises:
            TransportError: the link is closed.
            LocalError: ``payload`` is over ``max_frame``.
        """
        if self._close_reason is not None:
            raise TransportError(f"the link is closed: {self._close_reason}")
        self._transport.write(self._session.send(payload))

    def send_many(self, payloads: Iterable[bytes]) -> None:
        """Encrypt several frames and write them at once (same errors as :meth:`send`)."""
        if self._close_reason is not None:
            raise TransportError(f"the link is closed: {self._close_reason}")
        self._transport.write(self._session.send_many(payloads))

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark.

        Raises:
            TransportError: the link is (or gets) closed.
        """
        if self._paused and self._close_reason is None:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._drain_waiters.remove(waiter)
        if self._close_reason is not None:
            raise TransportError(f"the link is closed: {self._close_reason}")

    def close(self, reason: str) -> None:
        """Send a close frame carrying ``reason`` (the peer sees it) and close.

        Bytes already written are flushed first; a peer that does not take them within
        the handshake timeout is cut off. Idempotent: the first reason stands.
        """
        self._shutdown(reason, tell_peer=True)

    # -- driven by _Connection -------------------------------------------------------

    def _deliver(self, frames: list[bytes]) -> None:
        on_frames = self._on_frames
        if on_frames is None:
            self._pending += frames
            return
        try:
            on_frames(self, frames)
        except Exception as exc:  # noqa: BLE001 - a receiver's bug closes its link, not the node
            _log.exception("frame receiver raised", peer=self.peer_address)
            self._shutdown(f"the frame receiver raised {type(exc).__name__}", tell_peer=True)

    def _shutdown(self, reason: str, *, tell_peer: bool) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        _log.info(
            "link closed", peer=self.peer_address, peer_id=_short(self.peer_id), reason=reason
        )
        transport = self._transport
        if tell_peer and not transport.is_closing():
            final = self._session.close(reason)
            if final:
                transport.write(final)
        if transport.get_write_buffer_size() and not transport.is_closing():
            # A peer that stops reading must not hold the socket open forever.
            self._linger_timer = self._loop.call_later(self._linger, transport.abort)
        transport.close()
        self._wake_drainers()
        if not self.closed.done():  # a caller may have cancelled it (wait_for)
            self.closed.set_result(reason)

    def _wake_drainers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _connection_lost(self, reason: str) -> None:
        self._shutdown(reason, tell_peer=False)
        if self._linger_timer is not None:
            self._linger_timer.cancel()


class _HandshakeGate:
    """Counts the handshakes a server runs, in all and per peer host, and refuses more:
    a flood of connections that never finish costs a bounded number of sockets."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self.running = 0
        self.by_host: dict[str, int] = {}

    def enter(self, host: str) -> str | None:
        """Admit one handshake from ``host``; or the reason to refuse it."""
        if self.running >= self.total:
            return f"too many handshakes in progress ({self.total})"
        if self.by_host.get(host, 0) >= self.per_host:
            return f"too many handshakes in progress from {host} ({self.per_host})"
        self.running += 1
        self.by_host[host] = self.by_host.get(host, 0) + 1
        return None

    def leave(self, host: str) -> None:
        self.running -= 1
        left = self.by_host[host] - 1
        if left:
            self.by_host[host] = left
        else:
            del self.by_host[host]


def _tune(sock: socket.socket) -> None:
    """No Nagle delay (frames are small and latency-bound), and TCP keepalive."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    names = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
    for name, value in zip(names, KEEPALIVE, strict=True):
        option = getattr(socket, name, None)  # Linux names; elsewhere the system's defaults
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class _Connection(asyncio.Protocol):
    """Drives one SecureSession over one TCP connection; hands over a Link when established."""

    def __init__(
        self,
        session: SecureSession,
        *,
        deadline: float,
        timeout: float,
        on_established: Callable[[Link], None],
        on_refused: Callable[[str, str], None],
        gate: _HandshakeGate | None = None,
    ) -> None:
        self._session = session
        self._deadline = deadline
        self._timeout = timeout
        self._on_established = on_established
        self._on_refused = on_refused
        self._gate = gate
        self._gate_host: str | None = None  # set while this handshake counts at the gate
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._link: Link | None = None
        self._refused = False
        self.peer_address = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        host = "?"
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
            self.peer_address = f"{host}:{peer[1]}"
        if self._gate is not None:
            refusal = self._gate.enter(host)
            if refusal is not None:
                self._refuse(refusal)
                return
            self._gate_host = host
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            _tune(sock)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._deadline, self._timed_out)
        hello = self._session.data_to_send()
        if hello:
            transport.write(hello)

    def data_received(self, data: bytes) -> None:
        link = self._link
        if link is None:
            self._handshake(data)
            return
        if link._close_reason is not None:
            return
        try:
            frames = self._session.receive_data(data)
        except TransportError as exc:
            link._shutdown(exc.reason, tell_peer=True)
            return
        if frames:
            link._deliver(frames)
        if self._session.peer_close_reason is not None:
            self._peer_closed(link)

    def _handshake(self, data: bytes) -> None:
        if self._refused:
            return
        assert self._transport is not None
        try:
            frames = self._session.receive_data(data)
        except TransportError as exc:
            self._refuse(exc.reason)
            return
        out = self._session.data_to_send()
        if out:
            self._transport.write(out)
        if self._session.peer_id is None:
            return
        # Established (frames and even the peer's close may have come in the same read).
        if self._timer is not None:
            self._timer.cancel()
        self._leave_gate()
        link = self._link = Link(self._transport, self._session, self.peer_address, self._timeout)
        _log.info("link established", peer=self.peer_address, peer_id=_short(link.peer_id))
        try:
            self._on_established(link)
        except Exception as exc:  # noqa: BLE001 - a failing on_link closes its link, not the server
            _log.exception("on_link raised", peer=self.peer_address)
            link._shutdown(f"on_link raised {type(exc).__name__}", tell_peer=True)
            return
        if frames:
            link._deliver(frames)
        if self._session.peer_close_reason is not None:
            self._peer_closed(link)

    def _peer_closed(self, link: Link) -> None:
        reason = f"the peer closed the link: {self._session.peer_close_reason}"
        link._shutdown(reason, tell_peer=False)

    def eof_received(self) -> bool:
        try:
            self._session.receive_eof()
        except TransportError as exc:
            if self._link is not None:
                self._link._shutdown(exc.reason, tell_peer=False)
            else:
                self._refuse(exc.reason)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        reason = f"connection lost: {exc}" if exc else "connection closed"
        if self._link is not None:
            self._link._connection_lost(reason)
        else:
            self._refuse(f"{reason} during the handshake")

    def pause_writing(self) -> None:
        if self._link is not None:
            self._link._paused = True

    def resume_writing(self) -> None:
        if self._link is not None:
            self._link._paused = False
            self._link._wake_drainers()

    def _timed_out(self) -> None:
        if self._link is None:
            self._refuse(f"the handshake did not complete within {self._timeout:g}s")

    def _leave_gate(self) -> None:
        if self._gate is not None and self._gate_host is not None:
            self._gate.leave(self._gate_host)
            self._gate_host = None

    def _refuse(self, reason: str) -> None:
        if self._refused:
            return
        self._refused = True
        if self._timer is not None:
            self._timer.cancel()
        self._leave_gate()
        if self._transport is not None:
            self._transport.abort()
        try:
            self._on_refused(self.peer_address, reason)
        except Exception:  # noqa: BLE001 - a failing callback must not take the server down
            _log.exception("on_refused raised", peer=self.peer_address)


async def dial(
    host: str,
    port: int,
    identity: Signer,
    expected_peer: bytes,
    *,
    timeout: float = 5.0,
    max_frame: int = MAX_FRAME,
) -> Link:
    """Connect to ``host:port`` and authenticate both ends.

    Args:
        identity: this node's identity (an Ed25519 :class:`~bfs_smr.Signer`).
        expected_peer: the node id the responder must prove; any other is refused.
        timeout: seconds for connecting and the whole handshake together.
        max_frame: the largest payload of one frame (both ends must agree).

    Returns:
        A :class:`Link` the responder has accepted.

    Raises:
        TransportError: cannot connect, timed out, or the handshake failed (wrong
            identity, bad signature, refused by the responder …).
        LocalError: ``identity`` is not an Ed25519 signer or ``expected_peer`` is malformed.
    """
    session = SecureSession.initiator(identity, expected_peer, max_frame=max_frame)
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Link] = loop.create_future()
    where = f"{host}:{port}"
    deadline = loop.time() + timeout

    def established(link: Link) -> None:
        if result.done():  # dial was cancelled meanwhile: nobody will own this link
            link.close("dial was cancelled")
        else:
            result.set_result(link)

    def refused(_peer: str, reason: str) -> None:
        _log.warning("dial failed", peer=where, reason=reason)
        if not result.done():
            result.set_exception(TransportError(f"{where}: {reason}"))

    def factory() -> _Connection:
        return _Connection(
            session,
            deadline=deadline,
            timeout=timeout,
            on_established=established,
            on_refused=refused,
        )

    try:
        async with asyncio.timeout_at(deadline):
            transport, _ = await loop.create_connection(factory, host, port)
    except TimeoutError:
        raise TransportError(f"{where}: connecting timed out after {timeout:g}s") from None
    except OSError as exc:
        raise TransportError(f"{where}: cannot connect ({exc.strerror or exc})") from None
    try:
        return await result
    except asyncio.CancelledError:
        if result.done() and not result.cancelled() and result.exception() is None:
            result.result().close("dial was cancelled")
        else:
            transport.abort()
        raise


async def serve(
    host: str,
    port: int,
    identity: Signer,
    on_link: Callable[[Link], None],
    *,
    allow: Callable[[bytes], bool] | None = None,
    timeout: float = 5.0,
    max_frame: int = MAX_FRAME,
    on_refused: Callable[[str, str], None] | None = None,
    max_handshakes: int = MAX_HANDSHAKES,
    max_handshakes_per_host: int = MAX_HANDSHAKES_PER_HOST,
) -> asyncio.Server:
    """Accept connections on ``host:port``; hand each authenticated one to ``on_link``.

    Args:
        identity: this node's identity (an Ed25519 :class:`~bfs_smr.Signer`).
        on_link: called with each established :class:`Link`; it should call
            :meth:`Link.set_receiver` (frames wait until it does). If it raises, that link
            is closed.
        allow: which initiator node ids to accept (``None``: any that proves its key).
        timeout: seconds a connection has to complete the handshake (and a closing link
            to flush what it still has to send).
        max_frame: the largest payload of one frame (both ends must agree).
        on_refused: called with ``(peer address, reason)`` for every connection refused
            during the handshake (bad magic, timeout, unknown identity, too many
            handshakes …); it reports them. Without it, each is logged as a warning.
        max_handshakes: the most handshakes in progress at once; a connection beyond
            it is refused at once (established links do not count).
        max_handshakes_per_host: the same, for connections from one peer address, so
            one host cannot take all of ``max_handshakes``.

    Returns:
        The listening :class:`asyncio.Server`. Closing it stops accepting; it does not
        close links already handed out.
    """
    SecureSession.responder(identity, max_frame=max_frame)  # check the arguments now
    if max_handshakes < 1 or max_handshakes_per_host < 1:
        raise LocalError("max_handshakes and max_handshakes_per_host must be at least 1")
    loop = asyncio.get_running_loop()
    gate = _HandshakeGate(max_handshakes, max_handshakes_per_host)

    def refused(peer: str, reason: str) -> None:
        _log.warning("connection refused", peer=peer, reason=reason)

    def factory() -> _Connection:
        return _Connection(
            SecureSession.responder(identity, allow=allow, max_frame=max_frame),
            deadline=loop.time() + timeout,
            timeout=timeout,
            on_established=on_link,
            on_refused=refused if on_refused is None else on_refused,
            gate=gate,
        )

    return await loop.create_server(factory, host, port)
