"""One end of one connection, sans-IO: the handshake, then encrypted frames."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bfs_smr._crypto import Signer
from bfs_smr._errors import BfsSmrError, LocalError

from ._config import TransportConfig, _resolve
from ._errors import TransportError
from ._frames import FrameReader, FrameWriter
from ._handshake import Handshake, _State
from ._primitives import _ID, _check_identity, _short


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
        "_can_send",
        "_failure",
        "_final_sent",
        "_hs",
        "_initiator",
        "_outbox",
        "_reader",
        "_state",
        "_writer",
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
        config: TransportConfig | None = None,
    ) -> None:
        _check_identity(identity)
        if initiator and (not isinstance(expected_peer, bytes) or len(expected_peer) != _ID):
            raise LocalError("an initiator needs the expected peer's 32-byte node id")
        config = _resolve(config)
        self._initiator = initiator
        self.max_frame = config.max_frame
        self.peer_id: bytes | None = None
        self.peer_close_reason: str | None = None
        self._outbox: list[bytes] = []
        self._failure: str | None = None
        self._reader: FrameReader | None = None
        self._writer: FrameWriter | None = None
        self._can_send = False  # established, and not closed or failed since
        self._final_sent = False
        # Holds every handshake secret; dropped once established or failed.
        self._hs: Handshake | None = Handshake(
            identity,
            self._outbox,
            initiator=initiator,
            expected_peer=expected_peer,
            allow=allow,
        )
        self._state = self._hs.state

    @classmethod
    def initiator(
        cls, identity: Signer, expected_peer: bytes, *, config: TransportConfig | None = None
    ) -> SecureSession:
        """The dialling end: it refuses any responder but ``expected_peer``."""
        return cls(identity, initiator=True, expected_peer=expected_peer, config=config)

    @classmethod
    def responder(
        cls,
        identity: Signer,
        *,
        allow: Callable[[bytes], bool] | None = None,
        config: TransportConfig | None = None,
    ) -> SecureSession:
        """The accepting end: it refuses initiators ``allow`` rejects (``None``: anyone)."""
        return cls(identity, initiator=False, allow=allow, config=config)

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
            reader = self._reader  # set exactly while established
            if reader is not None:
                frames, peer_close = reader.feed(data)
                if peer_close is not None:
                    self._peer_closed(peer_close)
                return frames
            hs = self._hs
            if hs is not None:
                rest = hs.receive(data)
                self._state = hs.state
                return [] if rest is None else self._established(hs, rest)
            if self._state is _State.FAILED:
                raise TransportError(f"the session already failed: {self._failure}")
            if data:  # closed by the peer
                raise TransportError("data after the peer's close frame")
            return []
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
            mid_frame = self._reader is not None and self._reader.mid_frame
            where = "in the middle of a frame" if mid_frame else "without a close frame"
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

    def _established(self, hs: Handshake, rest: bytes) -> list[bytes]:
        """Take the frame streams from the completed handshake; decrypt ``rest``."""
        self._hs = None  # and with it the handshake's secrets
        self.peer_id = hs.peer_id
        self._reader = FrameReader(hs.rx, self.max_frame)
        self._writer = FrameWriter(hs.tx, self.max_frame)
        self._can_send = True
        if not rest:
            return []
        frames, peer_close = self._reader.feed(rest)
        if peer_close is not None:
            self._peer_closed(peer_close)
        return frames

    def _peer_closed(self, reason: str) -> None:
        self.peer_close_reason = reason
        self._state = _State.PEER_CLOSED
        self._can_send = False
        self._reader = None

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        self._state = _State.FAILED
        self._can_send = False
        self._hs = None  # with the handshake's secrets, and its unsent stream
        self._reader = None
        self._outbox.clear()

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
        assert self._writer is not None
        return self._writer.frame(payload)

    def send_many(self, payloads: Iterable[bytes]) -> bytes:
        """Encrypt several frames, in order; return their bytes, concatenated."""
        return b"".join([self.send(payload) for payload in payloads])

    def close(self, reason: str = "") -> bytes:
        """Return the close frame (carrying ``reason``) and refuse further sends.

        Works after a receive failure too, so the peer learns why it was dropped. Returns
        ``b""`` when there is nothing to send it on (the handshake never completed) or it
        was sent already. Receiving still works until the peer stops.
        """
        writer = self._writer
        if writer is None:
            hs = self._hs  # an initiator awaiting confirm can already send
            if hs is None or hs.tx is None:
                return b""
            writer = self._writer = FrameWriter(hs.tx, self.max_frame)
        if self._final_sent:
            return b""
        self._final_sent = True
        self._can_send = False
        return writer.final(reason)

    def _cannot_send(self) -> BfsSmrError:
        if self._failure is not None:
            return TransportError(f"the session failed: {self._failure}")
        if self._state is _State.PEER_CLOSED:
            return TransportError("the peer closed the link")
        if self._final_sent:
            return LocalError("the link was closed locally")
        return LocalError(f"cannot send before the handshake completes ({self._state.value})")
