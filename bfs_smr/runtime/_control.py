"""The node's control endpoint: one JSON request and one JSON reply per connection.

It listens on 127.0.0.1 only, and every request must carry the secret kept (0600) in the
node's data directory, compared in constant time. A request is one line
``{"secret", "op", "args"}``; the reply is one line ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "one line"}``. Lines are bounded (:data:`MAX_LINE`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .._errors import BfsSmrError, LocalError
from ._datadir import DataDir
from ._logging import get_logger

__all__ = ["MAX_LINE", "ControlError", "call", "serve_control"]

MAX_LINE = 1 << 16

_log = get_logger("bfs_smr.control")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(BfsSmrError):
    """The node refused or failed a control request; the message is the node's reason."""


async def serve_control(secret: str, handler: Handler) -> asyncio.Server:
    """Serve control requests on 127.0.0.1 (a free port) with ``handler(op, args)``."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply: dict[str, Any]
        try:
            line = await reader.readuntil(b"\n")
            request = json.loads(line)
            if type(request) is not dict:
                raise LocalError("a request is a JSON object")
            given = request.get("secret")
            if type(given) is not str or not hmac.compare_digest(given, secret):
                raise LocalError("wrong control secret")
            op, args = request.get("op"), request.get("args", {})
            if type(op) is not str or type(args) is not dict:
                raise LocalError("a request names an op and gives args as an object")
            reply = {"ok": True, "result": await handler(op, args)}
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError) as exc:
            reply = {"ok": False, "error": f"bad control request ({type(exc).__name__})"}
        except BfsSmrError as exc:
            reply = {"ok": False, "error": str(exc)}
        except TimeoutError:
            reply = {"ok": False, "error": "timed out"}
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the node; report it
            _log.exception("control request failed")
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    return await asyncio.start_server(on_client, "127.0.0.1", 0, limit=MAX_LINE)


def call(
    data_dir: Path | str, op: str, args: dict[str, Any] | None = None, *, timeout: float = 60.0
) -> dict[str, Any]:
    """Send one request to the node running on ``data_dir`` and return its result.

    Raises:
        LocalError: no node runs there, or it cannot be reached.
        ControlError: the node refused or failed the request.
    """
    import socket

    dd = DataDir(data_dir)
    info = dd.control()
    secret = dd.secret()
    request = json.dumps({"secret": secret, "op": op, "args": args or {}}).encode() + b"\n"
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
