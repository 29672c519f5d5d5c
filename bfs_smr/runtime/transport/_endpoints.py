"""Dialling and listening: :func:`dial` and :func:`serve`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bfs_smr._crypto import Signer
from bfs_smr._errors import LocalError
from bfs_smr.runtime._logging import get_logger

from ._config import TransportConfig, _resolve
from ._errors import TransportError
from ._link import Link, _Connection, _HandshakeGate
from ._session import SecureSession

_log = get_logger("bfs_smr.transport")


async def dial(
    host: str,
    port: int,
    identity: Signer,
    expected_peer: bytes,
    *,
    timeout: float | None = None,
    config: TransportConfig | None = None,
) -> Link:
    """Connect to ``host:port`` and authenticate both ends.

    Args:
        identity: this node's identity (an Ed25519 :class:`~bfs_smr.Signer`).
        expected_peer: the node id the responder must prove; any other is refused.
        timeout: seconds for connecting and the whole handshake together; the same as
            ``config.handshake_timeout``, which it replaces (give one or the other).
        config: timeouts and limits (``None``: the defaults); both ends must agree on
            ``max_frame``.

    Returns:
        A :class:`Link` the responder has accepted.

    Raises:
        TransportError: cannot connect, timed out, or the handshake failed (wrong
            identity, bad signature, refused by the responder …).
        LocalError: ``identity`` is not an Ed25519 signer, ``expected_peer`` is malformed,
            or ``timeout`` is out of range or given together with ``config``.
    """
    if timeout is not None:
        if config is not None:
            raise LocalError("give the timeout as timeout= or in config, not both")
        config = TransportConfig(handshake_timeout=timeout)
    config = _resolve(config)
    session = SecureSession.initiator(identity, expected_peer, config=config)
    timeout = config.handshake_timeout
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Link] = loop.create_future()
    where = f"{host}:{port}"
    log = _log.bind(address=where)
    deadline = loop.time() + timeout

    def established(link: Link) -> None:
        if result.done():  # dial was cancelled meanwhile: nobody will own this link
            link.close("dial was cancelled")
        else:
            result.set_result(link)

    def refused(_peer: str, reason: str) -> None:
        log.warning("dial failed", reason=reason)
        if not result.done():
            result.set_exception(TransportError(f"{where}: {reason}"))

    def factory() -> _Connection:
        return _Connection(
            session,
            deadline=deadline,
            config=config,
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
    on_refused: Callable[[str, str], None] | None = None,
    config: TransportConfig | None = None,
) -> asyncio.Server:
    """Accept connections on ``host:port``; hand each authenticated one to ``on_link``.

    Args:
        identity: this node's identity (an Ed25519 :class:`~bfs_smr.Signer`).
        on_link: called with each established :class:`Link`; it should call
            :meth:`Link.set_receiver` (frames wait until it does). If it raises, that link
            is closed.
        allow: which initiator node ids to accept (``None``: any that proves its key).
        on_refused: called with ``(peer address, reason)`` for every connection refused
            during the handshake (bad magic, timeout, unknown identity, too many
            handshakes …); it reports them. Without it, each is logged as a warning.
        config: timeouts and limits (``None``: the defaults): how long a connection has
            to complete the handshake (and a closing link to flush what it still has to
            send), the largest frame (both ends must agree), and how many handshakes may
            run at once, in all and from one peer address.

    Returns:
        The listening :class:`asyncio.Server`. Closing it stops accepting; it does not
        close links already handed out.
    """
    config = _resolve(config)
    SecureSession.responder(identity, config=config)  # check the arguments now
    loop = asyncio.get_running_loop()
    gate = _HandshakeGate(config.max_handshakes, config.max_handshakes_per_host)

    def refused(peer: str, reason: str) -> None:
        _log.warning("connection refused", address=peer, reason=reason)

    def factory() -> _Connection:
        return _Connection(
            SecureSession.responder(identity, allow=allow, config=config),
            deadline=loop.time() + config.handshake_timeout,
            config=config,
            on_established=on_link,
            on_refused=refused if on_refused is None else on_refused,
            gate=gate,
        )

    return await loop.create_server(factory, host, port)
