"""The node's HTTP API (``--http HOST:PORT``): JSON routes, the event stream, the metrics,
and the page (docs/http-api.md).

Every ``/v1/*`` and ``/metrics`` request needs ``Authorization: Bearer TOKEN``, the token
kept (0600) in ``DIR/api.token``, compared in constant time; ``GET /`` and
``GET /static/FILE`` (the page, from this package's ``web`` directory) need none. Every
route that acts calls the node's control operations (:mod:`._ops`), the handlers the
command line's control endpoint calls, so both give the same results and the same
one-line reasons. What this module adds is the checking of HTTP input, before any of it
reaches an operation: the body is a JSON object of at most :data:`MAX_BODY` bytes, each
field of the type and size the route takes, no field unknown; a bad one is a 4xx with the
reason, never a 500 (a 500 is a bug, logged). Requests in flight
(:data:`MAX_REQUESTS`) and event streams (:data:`bfs_smr.runtime.node._events.MAX_STREAMS`)
are bounded: over either, 503.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bfs_smr._errors import BfsSmrError, CodecError, CommandRejected, L1Error
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import NodeChannel
from bfs_smr.runtime.node._events import EventHub
from bfs_smr.runtime.node._metrics import NodeMetrics
from bfs_smr.runtime.node._openapi import openapi_document
from bfs_smr.runtime.node._ops import MAX_BATCH

if TYPE_CHECKING:
    # aiohttp is imported when a node serves HTTP, not by every command-line client that
    # imports the node's modules (it would add half a second to each `bfs-smr channel`).
    from aiohttp import web

__all__ = [
    "CLOSE_TIMEOUT",
    "KEEPALIVE",
    "MAX_BODY",
    "MAX_REQUESTS",
    "MAX_TIMEOUT",
    "WEB_DIR",
    "HttpApi",
]

#: The largest request body, in bytes (a larger one: 413).
MAX_BODY = 64 * 1024
#: Requests handled at once, event streams not counted; more: 503.
MAX_REQUESTS = 64
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE = 15.0
#: Seconds an event stream's reader has to take one write; a slower one is dropped.
WRITE_TIMEOUT = 30.0
#: The longest ``timeout`` a request may give, in seconds.
MAX_TIMEOUT = 3600.0
#: Seconds a close answered with 202 goes on waiting for the payout in the background
#: (the node keeps at the close after that too; this only bounds the waiting task).
CLOSE_TIMEOUT = 31 * 86_400.0
#: Where the page's files are (owned by the page, docs/web.md).
WEB_DIR = Path(__file__).with_name("web")

_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)*")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
#: The page may load only its own files and talk only to this node.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

#: Failures of an operation that are the peer or the L1 not answering (yet): try again.
_UNAVAILABLE = (
    "try again later",
    "not doubly signed within",
    "not open on L1 after",
    "not paid out within",
    "cannot reach the peer",
    "did not answer",
    "the node shut down",
)
#: Failures that are the channel's state: it cannot do that now.
_CONFLICT = (
    "it takes no commands",
    "nothing is doubly signed",
    "nothing is locked to close",
    "the peer refused the channel",
    "on L1; ",
    "broke this channel's protocol",
    "does not support force moves",
)
_REFUSAL_OF = {
    400: "api_bad_request",
    401: "api_unauthorized",
    404: "api_not_found",
    405: "api_bad_request",
    409: "api_conflict",
    413: "api_too_large",
    503: "api_busy",
}

_log = get_logger("bfs_smr.http")

Control = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiError(Exception):
    """Answer the request with ``status`` and ``{"error": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpApi:
    """The node's HTTP server.

    Args:
        control: carries out a control operation (``Node.control``).
        chans: the node's channels by id (a route's channel must be one of them).
        hub: the node's event hub (``GET /v1/events``).
        metrics: the node's metrics (``GET /metrics``).
        token: the bearer token.
        spawn: runs a task in the background (a close answered with 202).
    """

    def __init__(
        self,
        *,
        control: Control,
        chans: Mapping[bytes, NodeChannel],
        hub: EventHub,
        metrics: NodeMetrics,
        token: str,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.control = control
        self.chans = chans
        self.hub = hub
        self.metrics = metrics
        self._token = token.encode()
        self._spawn = spawn
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    def _make_app(self) -> web.Application:
        from aiohttp import web

        async def middleware(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(client_max_size=MAX_BODY, middlewares=[web.middleware(middleware)])
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/v1/info", self.info)
        app.router.add_get("/v1/channels", self.list_channels)
        app.router.add_post("/v1/channels", self.open_channel)
        app.router.add_get("/v1/channels/{id}", self.show)
        app.router.add_post("/v1/channels/{id}/commands", self.commands)
        app.router.add_post("/v1/channels/{id}/pay", self.pay)
        app.router.add_post("/v1/channels/{id}/close", self.close_channel)
        app.router.add_get("/v1/events", self.events)
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.router.add_get("/metrics", self.metrics_text)
        return app

    def routes(self) -> set[tuple[str, str]]:
        """Every ``(method, path template)`` served (HEAD aside)."""
        out = set()
        for route in self.app.router.routes():
            if route.method != "HEAD":
                info = route.resource.get_info() if route.resource else {}
                out.add((route.method, info.get("formatter") or info.get("path", "")))
        return out

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Serve on ``host:port``; returns the address bound.

        Raises:
            OSError: cannot listen there.
        """
        from aiohttp import web

        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=15.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        bound = self._runner.addresses[0]
        return host, int(bound[1])

    async def close(self) -> None:
        """End every event stream, then stop serving."""
        self.hub.end_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the checks every request goes through --------------------------------------------

    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        from aiohttp import web

        path = request.path
        stream = path == "/v1/events"
        counted = False
        try:
            if path.startswith("/v1/") or path == "/metrics":
                self._authenticate(request)
            if not stream:
                if self._in_flight >= MAX_REQUESTS:
                    raise ApiError(503, f"the node is busy: {MAX_REQUESTS} requests in flight")
                self._in_flight += 1
                counted = True
            response = await handler(request)
        except ApiError as exc:
            return self._error(exc.status, exc.reason)
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, f"the body is over {MAX_BODY:,} bytes")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._error(exc.status, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: logged, and the client told so
            _log.exception("HTTP request failed", path=path, method=request.method)
            return self._error(500, f"internal error: {type(exc).__name__}")
        finally:
            if counted:
                self._in_flight -= 1
        if not stream:
            response.headers.update(
                _PAGE_HEADERS if not path.startswith(("/v1/", "/metrics")) else _SECURITY_HEADERS
            )
        return response

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        raw = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(raw, self._token):
            raise ApiError(401, "a bearer token is required: Authorization: Bearer TOKEN")

    def _error(self, status: int, reason: str) -> web.Response:
        refusal = _REFUSAL_OF.get(status)
        if refusal is not None:
            self.metrics.refused(refusal)
        headers = dict(_SECURITY_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="bfs-smr"'
        return _json({"error": " ".join(reason.split())[:1000]}, status=status, headers=headers)

    async def _call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The control operation ``op``, its failures turned into API errors."""
        try:
            return await self.control(op, args)
        except CommandRejected as exc:
            raise ApiError(409, exc.reason) from None
        except L1Error as exc:
            raise ApiError(503, exc.reason) from None
        except CodecError as exc:
            raise ApiError(400, exc.reason) from None
        except BfsSmrError as exc:
            raise ApiError(_status_of(exc), exc.reason) from None
        except TimeoutError:
            raise ApiError(503, "timed out") from None

    def _channel(self, request: web.Request) -> str:
        """The route's channel: its full id, 64 hex digits, of a channel on this node."""
        text = request.match_info["id"]
        try:
            cid = bytes.fromhex(text)
        except ValueError:
            cid = b""
        if len(cid) != 32:
            raise ApiError(400, f"a channel id is 64 hex digits, got {text[:80]!r}")
        if cid not in self.chans:
            raise ApiError(404, f"no channel {cid.hex()!r} on this node")
        return cid.hex()

    # -- the page --------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return _file("index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _STATIC_NAME.fullmatch(name):
            raise ApiError(404, "no such file")
        return _file(name)

    # -- the API ---------------------------------------------------------------------------

    async def info(self, request: web.Request) -> web.StreamResponse:
        return _json(await self._call("status", {}))

    async def list_channels(self, request: web.Request) -> web.StreamResponse:
        every = request.query.get("all", "false")
        if every not in ("true", "false"):
            raise ApiError(400, f"all is true or false, got {every[:40]!r}")
        return _json(await self._call("list", {"all": every == "true"}))

    async def show(self, request: web.Request) -> web.StreamResponse:
        return _json(await self._call("show", {"channel": self._channel(request)}))

    async def open_channel(self, request: web.Request) -> web.StreamResponse:
        body = await _body(
            request,
            {
                "peer": _text("peer", 300),
                "peer_id": _text("peer_id", 64),
                "app": _text("app", 100),
                "deposit": _whole("deposit"),
                "peer_deposit": _whole("peer deposit"),
                "options": _object("options"),
                "timeout": _timeout,
            },
            required=("peer", "peer_id", "deposit"),
        )
        result = await self._call("open", body)
        return _json(result, status=201)

    async def commands(self, request: web.Request) -> web.StreamResponse:
        cid = self._channel(request)
        body = await _body(
            request,
            {"command": _any, "count": _count, "timeout": _timeout},
            required=("command",),
        )
        return _json(await self._call("send", {**body, "channel": cid}))

    async def pay(self, request: web.Request) -> web.StreamResponse:
        cid = self._channel(request)
        body = await _body(
            request,
            {"amount": _whole("amount"), "count": _count, "timeout": _timeout},
            required=("amount",),
        )
        return _json(await self._call("pay", {**body, "channel": cid}))

    async def close_channel(self, request: web.Request) -> web.StreamResponse:
        cid = self._channel(request)
        body = await _body(
            request,
            {
                "unilateral": _flag("unilateral"),
                "wait": _flag("wait"),
                "timeout": _timeout,
            },
        )
        wait = body.pop("wait", False)
        c = self.chans[bytes.fromhex(cid)]
        if wait or c.payouts is not None:
            return _json(await self._call("close", {**body, "channel": cid}))
        self._spawn(self._close_later({"timeout": CLOSE_TIMEOUT, **body, "channel": cid}))
        return _json({"channel": cid, "status": "closing"}, status=202)

    async def _close_later(self, args: dict[str, Any]) -> None:
        try:
            result = await self.control("close", args)
            _log.info(
                "close asked over HTTP: paid out",
                channel=args["channel"],
                payouts=result.get("payouts"),
            )
        except (BfsSmrError, TimeoutError) as exc:
            _log.warning(
                "close asked over HTTP failed", channel=args["channel"], reason=str(exc)[:500]
            )

    async def events(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        sub = self.hub.subscribe()
        if sub is None:
            raise ApiError(503, f"the node is busy: {self.hub.max_streams} event streams open")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(b": bfs-smr events\n\n")
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            while not sub.ended:
                # Woken at least every second to see whether the reader went away, so its
                # place among the streams frees soon after (a closed connection is only
                # seen at a write otherwise).
                event = await sub.get(1.0)
                transport = request.transport
                if sub.ended or transport is None or transport.is_closing():
                    break
                if sub.dropped:
                    await _write(response, b": dropped: this reader fell too far behind\n\n")
                    break
                if event is None:
                    if loop.time() - quiet_since < KEEPALIVE:
                        continue
                    chunk = b": keep-alive\n\n"
                else:
                    kind, data = event
                    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
                    chunk = f"event: {kind}\ndata: {text}\n\n".encode()
                await _write(response, chunk)
                quiet_since = loop.time()
        except (ConnectionError, TimeoutError, OSError):
            pass  # the reader went away, or was too slow to take a write
        finally:
            sub.close()
        return response

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(openapi_document())

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})


async def _write(response: web.StreamResponse, chunk: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(chunk)


def _json(value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.json_response(value, status=status, headers=headers)


def _file(name: str) -> web.StreamResponse:
    from aiohttp import web

    path = WEB_DIR / name
    if not path.is_file():
        raise ApiError(404, "no such file" if name != "index.html" else "the page is not installed")
    content_type = _TYPES.get(path.suffix, "application/octet-stream")
    return web.Response(body=path.read_bytes(), headers={"Content-Type": content_type})


def _status_of(exc: BfsSmrError) -> int:
    reason = exc.reason
    if reason.startswith("no channel "):
        return 404
    if any(text in reason for text in _UNAVAILABLE):
        return 503
    if any(text in reason for text in _CONFLICT):
        return 409
    return 400


# -- bodies and their fields ------------------------------------------------------------------

Check = Callable[[Any], Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _body(
    request: web.Request, fields: dict[str, Check], *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The request's body, a JSON object whose every field ``fields`` knows and checks.

    Raises:
        ApiError: the body is over :data:`MAX_BODY` (413) or not such an object (400).
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"the body is over {MAX_BODY:,} bytes")
    raw = await request.read()
    if not raw.strip():
        value: Any = {}
    else:
        try:
            value = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            why = str(exc).splitlines()[0][:200] if isinstance(exc, ValueError) else "too deep"
            raise ApiError(400, f"the body is not JSON: {why}") from None
    if type(value) is not dict:
        raise ApiError(400, "the body must be a JSON object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        check = fields.get(key)
        if check is None:
            raise ApiError(400, f"unknown field {key[:100]!r}; expected {', '.join(fields)}")
        out[key] = check(item)
    for key in required:
        if key not in out:
            raise ApiError(400, f"the field {key!r} is required")
    return out


def _text(what: str, size: int) -> Check:
    def check(value: Any) -> str:
        if type(value) is not str or not 0 < len(value) <= size:
            raise ApiError(400, f"{what} must be a string of 1 to {size} characters")
        return value

    return check


def _whole(what: str) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or value < 0:
            raise ApiError(400, f"{what} must be a non-negative integer, got {_short(value)}")
        if value.bit_length() > 256:
            raise ApiError(400, f"{what} must be under 2**256")
        return value

    return check


def _count(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_BATCH:
        raise ApiError(400, f"count must be 1 to {MAX_BATCH:,}, got {_short(value)}")
    return value


def _flag(what: str) -> Check:
    def check(value: Any) -> bool:
        if type(value) is not bool:
            raise ApiError(400, f"{what} must be true or false")
        return value

    return check


def _object(what: str) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise ApiError(400, f"{what} must be a JSON object")
        return value

    return check


def _timeout(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value <= MAX_TIMEOUT:
        raise ApiError(400, f"timeout must be a number of seconds over 0, at most {MAX_TIMEOUT:g}")
    return float(value)


def _any(value: Any) -> Any:
    return value  # checked by the operation (plain data) and the app (a legal command)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        return type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
