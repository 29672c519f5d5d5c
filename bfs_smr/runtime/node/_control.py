"""The node's control endpoint: one request and one JSON reply line per connection.

It listens on 127.0.0.1 only, and every request must carry the secret kept (0600) in the
node's data directory, compared in constant time. A request is a 4-byte big-endian length
and that many bytes of canonical CBOR, ``{"args": {...}, "op": ..., "secret": ...}``,
read with the same hardened decoder as every other untrusted input (plain data only, so a
timeout travels as integer milliseconds, ``timeout_ms``); the reply is one JSON line
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "one line"}``. Requests
are bounded (:data:`MAX_LINE` bytes), a client has :data:`REQUEST_TIMEOUT` seconds to send
its request, and connections are capped (:func:`serve_control`): any local user can
connect, secret or not, and must not be able to hold the node's sockets or memory.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bfs_smr._codec import check_plain, decode, encode
from bfs_smr._errors import BfsSmrError, CodecError, LocalError
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.store._datadir import DataDir

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_LINE",
    "REPLY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "ControlError",
    "call",
    "encode_request",
    "serve_control",
]

#: The longest request, in bytes.
MAX_LINE = 1 << 16
#: Most CBOR items in one request (a command given to ``channel send`` included).
MAX_ITEMS = 1 << 14
#: Seconds a client has, from connecting, to send its whole request line.
REQUEST_TIMEOUT = 5.0
#: Seconds a client has to take its reply; one that does not read it is cut off.
REPLY_TIMEOUT = 10.0
#: Connections served at once, unless told otherwise (``--max-control-connections``).
MAX_CONNECTIONS = 256

_log = get_logger("bfs_smr.control")

_WRONG_SECRET = "wrong control secret"  # noqa: S105 - the reason, not a secret


def _ignore(_reason: str) -> None:
    pass


Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(BfsSmrError):
    """The node refused or failed a control request; the message is the node's reason."""


class _BadRequest(Exception):
    """The client sent no valid request line: answer with this reason."""


class _Gate:
    """Counts control connections: those still waiting for their request line (oldest
    first) and those whose request is running. A connection over the cap evicts the
    oldest waiting one, so idle connections cannot lock the owner out; only when every
    slot runs a request (which took the secret) is a new connection turned away."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.waiting: dict[asyncio.StreamWriter, None] = {}  # insertion order: oldest first
        self.running = 0

    def admit(self, writer: asyncio.StreamWriter) -> bool:
        if len(self.waiting) + self.running >= self.cap:
            if not self.waiting:
                return False
            oldest = next(iter(self.waiting))
            del self.waiting[oldest]
            oldest.transport.abort()
        self.waiting[writer] = None
        return True


async def serve_control(
    secret: str,
    handler: Handler,
    *,
    max_connections: int = MAX_CONNECTIONS,
    refused: Callable[[str], None] | None = None,
) -> asyncio.Server:
    """Serve control requests on 127.0.0.1 (a free port) with ``handler(op, args)``.

    Every connection must send its whole request line (at most :data:`MAX_LINE` bytes)
    within :data:`REQUEST_TIMEOUT` seconds of connecting and take its reply within
    :data:`REPLY_TIMEOUT`; at most ``max_connections`` are served at once (see
    :class:`_Gate`), so local clients without the secret hold a bounded number of
    sockets and bytes, for a bounded time. ``refused`` is told why each request is
    refused (``control_busy``, ``control_secret`` or ``control_bad_request``).
    """
    gate = _Gate(max_connections)
    count = refused or _ignore

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not gate.admit(writer):
            count("control_busy")
            await _reply(writer, {"ok": False, "error": "the node is busy: too many commands"})
            return
        try:
            try:
                op, args = await _read_request(reader, secret)
            finally:
                gate.waiting.pop(writer, None)
        except _BadRequest as exc:
            count("control_secret" if str(exc) == _WRONG_SECRET else "control_bad_request")
            await _reply(writer, {"ok": False, "error": str(exc)})
            return
        gate.running += 1
        try:
            reply = await _run(handler, op, args)
        finally:
            gate.running -= 1
        await _reply(writer, reply)

    return await asyncio.start_server(on_client, "127.0.0.1", 0, limit=MAX_LINE)


async def _read_request(reader: asyncio.StreamReader, secret: str) -> tuple[str, dict[str, Any]]:
    """One request, checked; or raise :class:`_BadRequest` with the reason."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            size = int.from_bytes(await reader.readexactly(4), "big")
            if size > MAX_LINE:
                raise _BadRequest(f"a request of {size} bytes is over the limit of {MAX_LINE}")
            request = decode(await reader.readexactly(size), max_size=MAX_LINE, max_items=MAX_ITEMS)
    except TimeoutError:
        raise _BadRequest(f"no whole request within {REQUEST_TIMEOUT:g} s") from None
    except CodecError as exc:
        raise _BadRequest(f"bad control request: {exc.reason}") from None
    except (asyncio.IncompleteReadError, OSError) as exc:
        raise _BadRequest(f"bad control request ({type(exc).__name__})") from None
    if type(request) is not dict:
        raise _BadRequest("a request is a map")
    given = request.get("secret")
    if type(given) is not str or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode()
    ):
        raise _BadRequest(_WRONG_SECRET)
    op, args = request.get("op"), request.get("args", {})
    if type(op) is not str or type(args) is not dict:
        raise _BadRequest("a request names an op and gives args as a map")
    if "timeout_ms" in args:
        ms = args.pop("timeout_ms")
        if type(ms) is not int or ms <= 0:
            raise _BadRequest("timeout_ms must be a positive integer")
        args["timeout"] = ms / 1000
    return op, args


def encode_request(secret: str, op: str, args: dict[str, Any]) -> bytes:
    """The bytes of one request, as :func:`call` sends it: a float ``timeout`` (seconds)
    goes as ``timeout_ms``.

    Raises:
        LocalError: an argument is not plain data (a float other than the timeout, …).
    """
    args = dict(args)
    if "timeout" in args:
        args["timeout_ms"] = max(1, round(float(args.pop("timeout")) * 1000))
    try:
        check_plain(args, max_items=MAX_ITEMS)
    except CodecError as exc:
        raise LocalError(f"cannot send {op!r} to the node: {exc.reason}") from None
    body = encode({"args": args, "op": op, "secret": secret})
    if len(body) > MAX_LINE:
        raise LocalError(f"the {op!r} request is {len(body):,} bytes, over {MAX_LINE:,}")
    return len(body).to_bytes(4, "big") + body


async def _run(handler: Handler, op: str, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": await handler(op, args)}
    except BfsSmrError as exc:
        return {"ok": False, "error": str(exc)}
    except TimeoutError:
        return {"ok": False, "error": "timed out"}
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the node; report it
        _log.exception("control request failed")
        return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    """Write the reply and close; a client that does not take it in time is cut off."""
    if writer.transport.is_closing():
        return  # evicted, or the client went away
    try:
        writer.write(json.dumps(reply).encode() + b"\n")
        async with asyncio.timeout(REPLY_TIMEOUT):
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError, TimeoutError):
        writer.transport.abort()


def call(
    data_dir: Path | str, op: str, args: dict[str, Any] | None = None, *, timeout: float = 60.0
) -> dict[str, Any]:
    """Send one request to the node running on ``data_dir`` and return its result.

    Raises:
        LocalError: no node runs there, or it cannot be reached.
        ControlError: the node refused or failed the request.
    """
    dd = DataDir(data_dir)
    info = dd.control()
    secret = dd.secret()
    request = encode_request(secret, op, args or {})
    try:
        with socket.create_connection(("127.0.0.1", int(info["port"])), timeout=timeout) as s:
            s.sendall(request)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        raise LocalError(f"the node on {dd.path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise LocalError(f"cannot reach the node on {dd.path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise LocalError(f"the node on {dd.path} closed the connection without a reply") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "failed")))
    result: dict[str, Any] = reply["result"]
    return result
