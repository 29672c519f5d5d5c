"""The handshake that authenticates both ends and keys the frames, sans-IO.

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

:class:`Handshake` is one end's state machine over these messages: one row per state in
``_STEPS`` (bytes to wait for, step, next state). Its secrets (ephemeral, shared and
handshake keys) live only in it, so dropping it drops them (Python cannot promise to zero
memory).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import nacl.bindings as _sodium

from bfs_smr._crypto import Signer

from ._errors import TransportError
from ._primitives import (
    _ED25519,
    _HEADER,
    _ID,
    _KEY,
    _P_HS2,
    _P_HS3,
    _P_HS4,
    _P_I2R,
    _P_R2I,
    _P_SIG_I,
    _P_SIG_R,
    _P_TH1,
    _P_TH2,
    _P_TH3,
    _SIG,
    _TAG,
    MAGIC,
    VERSION,
    _dh,
    _hash,
    _kdf,
    _open,
    _seal,
    _short,
)

_new_stream = _sodium.crypto_secretstream_xchacha20poly1305_state


class _State(enum.Enum):
    """The states of one end of a session; the ``AWAIT_*`` ones are the handshake's."""

    AWAIT_MAGIC = "awaiting magic and version"  # responder
    AWAIT_HELLO = "awaiting hello"  # responder
    AWAIT_REPLY = "awaiting reply"  # initiator
    AWAIT_AUTH = "awaiting auth"  # responder
    AWAIT_CONFIRM = "awaiting confirm"  # initiator
    ESTABLISHED = "established"
    PEER_CLOSED = "closed by the peer"
    FAILED = "failed"


class Handshake:
    """One end of the handshake: received bytes in, messages for the peer out.

    Messages for the peer are appended to ``outbox`` (the caller's list). Once ``state``
    is ``ESTABLISHED``, ``peer_id`` is the authenticated peer and ``tx`` / ``rx`` are the
    initialised secret-stream states of this end's and the peer's frames.
    """

    __slots__ = (
        "_allow",
        "_buf",
        "_claimed_peer",
        "_e_public",
        "_e_secret",
        "_expected",
        "_hs_key",
        "_identity",
        "_rx_key",
        "_shared",
        "_transcript",
        "outbox",
        "peer_id",
        "rx",
        "state",
        "tx",
    )

    def __init__(
        self,
        identity: Signer,
        outbox: list[bytes],
        *,
        initiator: bool,
        expected_peer: bytes | None,
        allow: Callable[[bytes], bool] | None,
    ) -> None:
        self._identity = identity
        self._expected = expected_peer
        self._allow = allow
        self.outbox = outbox
        self.peer_id: bytes | None = None
        self.tx: Any = None
        self.rx: Any = None
        self._buf = bytearray()
        self._claimed_peer: bytes | None = None
        self._e_secret: bytes | None = None
        self._e_public = b""
        self._shared = b""
        self._transcript = b""
        self._hs_key = b""
        self._rx_key = b""
        if initiator:
            self._e_public, self._e_secret = _sodium.crypto_box_keypair()
            outbox.append(MAGIC + bytes([VERSION]) + self._e_public)
            self.state = _State.AWAIT_REPLY
        else:
            self.state = _State.AWAIT_MAGIC

    def receive(self, data: bytes) -> bytes | None:
        """Consume received bytes; once established, return the bytes that followed the
        last handshake message (frames already), else ``None``.

        Raises:
            TransportError: the bytes break the handshake; this object is then useless.
        """
        buf = self._buf
        buf += data
        while self.state is not _State.ESTABLISHED:
            size, step, next_state = _STEPS[self.state]
            if len(buf) < size:
                return None
            message = bytes(buf[:size])
            del buf[:size]
            step(self, message)
            self.state = next_state
        rest = bytes(buf)
        buf.clear()
        return rest

    # -- one step per state, see _STEPS --------------------------------------------------

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
        self.outbox.append(e_r + _seal(_kdf(self._shared, _P_HS2, th1), th1, id_r + sig_r))
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
        self.tx = _new_stream()
        header_i: bytes = _sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self.tx, _kdf(shared, _P_I2R, th3)
        )
        self.outbox.append(_seal(_kdf(shared, _P_HS3, th2), th2, id_i + sig_i + header_i))
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
        self.rx = _new_stream()
        _sodium.crypto_secretstream_xchacha20poly1305_init_pull(
            self.rx, header_i, _kdf(shared, _P_I2R, th3)
        )
        self.tx = _new_stream()
        header_r: bytes = _sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self.tx, _kdf(shared, _P_R2I, th3)
        )
        self.outbox.append(_seal(_kdf(shared, _P_HS4, th3), th3, header_r))
        self.peer_id = id_i

    def _on_confirm(self, message: bytes) -> None:  # initiator
        header_r = _open(self._hs_key, self._transcript, message, "confirm")
        self.rx = _new_stream()
        _sodium.crypto_secretstream_xchacha20poly1305_init_pull(self.rx, header_r, self._rx_key)
        self.peer_id = self._claimed_peer


# The handshake transitions, one row per state: bytes to wait for, step, next state.
# A state missing here (established, closed, failed) is not a handshake state.
_STEPS: dict[_State, tuple[int, Callable[[Handshake, bytes], None], _State]] = {
    _State.AWAIT_MAGIC: (len(MAGIC) + 1, Handshake._on_magic, _State.AWAIT_HELLO),
    _State.AWAIT_HELLO: (_KEY, Handshake._on_hello, _State.AWAIT_AUTH),
    _State.AWAIT_REPLY: (_KEY + _ID + _SIG + _TAG, Handshake._on_reply, _State.AWAIT_CONFIRM),
    _State.AWAIT_AUTH: (_ID + _SIG + _HEADER + _TAG, Handshake._on_auth, _State.ESTABLISHED),
    _State.AWAIT_CONFIRM: (_HEADER + _TAG, Handshake._on_confirm, _State.ESTABLISHED),
}
