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

Timeouts and limits are one :class:`TransportConfig` (``config=``; ``None`` means its
defaults), accepted by :func:`dial`, :func:`serve` and :class:`SecureSession`.

Modules, one concern each (all private; this package re-exports the public names):

* ``_primitives`` — wire constants, BLAKE2b hashing and key derivation, the handshake's
  AEAD and X25519;
* ``_handshake`` — the four handshake messages and the key schedule, with why they are
  built that way (read its docstring for the message layout);
* ``_frames`` — frames on the two secret streams: framing, the length limit, the close
  frame;
* ``_session`` — :class:`SecureSession`, which runs the handshake and then the frames;
* ``_link`` — :class:`Link` and the asyncio protocol that drives a session over TCP
  (handshake deadline, handshake gate, backpressure, keepalive);
* ``_endpoints`` — :func:`dial` and :func:`serve`;
* ``_config`` — :class:`TransportConfig`, the one place the defaults are set.

Failures and who is at fault
----------------------------
Every violation raises :class:`TransportError` with a one-line reason and fails the session
for good. It derives from :class:`~bfs_smr.BfsSmrError`, not from ``RemoteViolation``: a
broken connection may be the network's or an attacker's doing rather than the
counterparty's, and must not by itself send a channel to L1. A local close sends the peer
a close frame with a reason, so it can tell a deliberate close from a cut connection (an
end of stream without one is reported as an error). Secret keys (identity, ephemeral,
session) are never logged or shown in ``repr``; ephemeral and handshake secrets are
dropped once used (Python cannot promise to zero memory). Logs are bound to the peer
(``peer``: its address; ``peer_id``: the start of its node id).
"""

from __future__ import annotations

from ._config import (
    KEEPALIVE,
    MAX_FRAME,
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_HOST,
    TransportConfig,
)
from ._endpoints import dial, serve
from ._errors import TransportError
from ._link import Link

# The handshake's building blocks, for tests that forge handshakes (tests/byzantine_peer.py).
from ._primitives import _P_HS2 as _P_HS2
from ._primitives import _P_HS3 as _P_HS3
from ._primitives import _P_SIG_I as _P_SIG_I
from ._primitives import _P_TH1 as _P_TH1
from ._primitives import _P_TH2 as _P_TH2
from ._primitives import MAGIC, VERSION
from ._primitives import _dh as _dh
from ._primitives import _hash as _hash
from ._primitives import _kdf as _kdf
from ._primitives import _open as _open
from ._primitives import _seal as _seal
from ._session import SecureSession

__all__ = [
    "KEEPALIVE",
    "MAGIC",
    "MAX_FRAME",
    "MAX_HANDSHAKES",
    "MAX_HANDSHAKES_PER_HOST",
    "VERSION",
    "Link",
    "SecureSession",
    "TransportConfig",
    "TransportError",
    "dial",
    "serve",
]
