"""A :class:`Link` to one peer, and the asyncio protocol that drives its session.

:class:`_Connection` runs one :class:`SecureSession` over one TCP connection: it writes
the handshake, enforces the handshake deadline and the server's handshake gate, and once
established hands a :class:`Link` to its owner; after that it feeds the link frames and
tells it when the socket can take more (backpressure) and when it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable

from bfs_smr.runtime._logging import bind_ids, get_logger

from ._config import TransportConfig
from ._errors import TransportError
from ._primitives import _short
from ._session import SecureSession

_log = get_logger("bfs_smr.transport")


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
        "_log",
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
        self._log = bind_ids(_log, peer=self.peer_id).bind(address=peer_address)

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
            self._log.exception("frame receiver raised")
            self._shutdown(f"the frame receiver raised {type(exc).__name__}", tell_peer=True)

    def _shutdown(self, reason: str, *, tell_peer: bool) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        self._log.info("link closed", reason=reason)
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


def _tune(sock: socket.socket, keepalive: tuple[int, int, int]) -> None:
    """No Nagle delay (frames are small and latency-bound), and TCP keepalive."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    names = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
    for name, value in zip(names, keepalive, strict=True):
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
        config: TransportConfig,
        on_established: Callable[[Link], None],
        on_refused: Callable[[str, str], None],
        gate: _HandshakeGate | None = None,
    ) -> None:
        self._session = session
        self._deadline = deadline
        self._config = config
        self._on_established = on_established
        self._on_refused = on_refused
        self._gate = gate
        self._gate_host: str | None = None  # set while this handshake counts at the gate
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._link: Link | None = None
        self._refused = False
        self.peer_address = "?"
        self._log = _log  # bound to the peer's address once connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        host = "?"
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
            self.peer_address = f"{host}:{peer[1]}"
        self._log = _log.bind(address=self.peer_address)
        if self._gate is not None:
            refusal = self._gate.enter(host)
            if refusal is not None:
                self._refuse(refusal)
                return
            self._gate_host = host
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            _tune(sock, self._config.keepalive)
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
        link = self._link = Link(
            self._transport, self._session, self.peer_address, self._config.handshake_timeout
        )
        link._log.info("link established")
        try:
            self._on_established(link)
        except Exception as exc:  # noqa: BLE001 - a failing on_link closes its link, not the server
            self._log.exception("on_link raised")
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
            timeout = self._config.handshake_timeout
            self._refuse(f"the handshake did not complete within {timeout:g}s")

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
            self._log.exception("on_refused raised")
