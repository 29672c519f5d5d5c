"""The OpenAPI 3.1 document of the node's HTTP API (``GET /v1/openapi.json``), written by hand.

tests/test_http_api.py checks that it names every route the server has, and no other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ID = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "64 hex digits"}
_WHOLE = {"type": "integer", "minimum": 0}
_TIMEOUT = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 3600,
    "description": "seconds to wait for the operation (the node's default if left out)",
}
_AMOUNTS = {
    "type": ["object", "null"],
    "additionalProperties": {"type": "integer"},
    "description": "an amount for each participant, by node id",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    str(code): {"$ref": f"#/components/responses/{name}"}
    for code, name in (
        (400, "BadRequest"),
        (401, "Unauthorized"),
        (404, "NotFound"),
        (409, "Conflict"),
        (413, "TooLarge"),
        (503, "Busy"),
    )
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": bool(required),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                }
            }
        },
    }


_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_CHANNEL_PARAM = {"name": "id", "in": "path", "required": True, "schema": _ID}


def openapi_document() -> dict[str, Any]:
    """The document, as a JSON-able dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bfs-smr node API",
            "version": "1",
            "description": "A bfs-smr node's channels, over HTTP (docs/http-api.md). Every "
            "route calls the operation the command line's `channel` commands call.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/": {
                "get": {
                    "summary": "The node's web page",
                    "security": [],
                    "responses": {"200": {"description": "HTML"}, "404": _ERRORS["404"]},
                }
            },
            "/static/{name}": {
                "get": {
                    "summary": "A file of the web page",
                    "security": [],
                    "parameters": [_NAME_PARAM],
                    "responses": {"200": {"description": "the file"}, "404": _ERRORS["404"]},
                }
            },
            "/v1/info": {
                "get": {
                    "summary": "The node (the `status` operation)",
                    "responses": {"200": _json(_ref("Info"), "the node"), **_ERRORS},
                }
            },
            "/v1/channels": {
                "get": {
                    "summary": "The node's channels not yet paid out on L1 (all=true: every one)",
                    "parameters": [
                        {
                            "name": "all",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                            "description": "true: settled channels too",
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "channels": {"type": "array", "items": _ref("Channel")}
                                },
                            },
                            "the channels",
                        ),
                        **_ERRORS,
                    },
                },
                "post": {
                    "summary": "Open a channel; answers once it is open on L1",
                    "requestBody": _body(
                        {
                            "peer": {"type": "string", "description": "the peer's HOST:PORT"},
                            "peer_id": _ID,
                            "app": {"type": "string", "default": "payments"},
                            "deposit": _WHOLE,
                            "peer_deposit": {**_WHOLE, "default": 0},
                            "options": {"type": "object", "default": {}},
                            "timeout": _TIMEOUT,
                        },
                        ["peer", "peer_id", "deposit"],
                    ),
                    "responses": {"201": _json(_ref("Channel"), "the channel"), **_ERRORS},
                },
            },
            "/v1/channels/{id}": {
                "get": {
                    "summary": "One channel",
                    "parameters": [_CHANNEL_PARAM],
                    "responses": {"200": _json(_ref("Channel"), "the channel"), **_ERRORS},
                }
            },
            "/v1/channels/{id}/commands": {
                "post": {
                    "summary": "Issue an app command (count copies in one update); answers "
                    "once doubly signed and durable. In a dispute on L1, forces the move.",
                    "parameters": [_CHANNEL_PARAM],
                    "requestBody": _body(
                        {
                            "command": {"description": "the app's command, any JSON"},
                            "count": {"type": "integer", "minimum": 1, "maximum": 10000},
                            "timeout": _TIMEOUT,
                        },
                        ["command"],
                    ),
                    "responses": {"200": _json(_ref("Committed"), "committed"), **_ERRORS},
                }
            },
            "/v1/channels/{id}/pay": {
                "post": {
                    "summary": 'Pay the peer (the command {"pay": amount})',
                    "parameters": [_CHANNEL_PARAM],
                    "requestBody": _body(
                        {
                            "amount": _WHOLE,
                            "count": {"type": "integer", "minimum": 1, "maximum": 10000},
                            "timeout": _TIMEOUT,
                        },
                        ["amount"],
                    ),
                    "responses": {"200": _json(_ref("Committed"), "committed"), **_ERRORS},
                }
            },
            "/v1/channels/{id}/close": {
                "post": {
                    "summary": "Close the channel: 202 at once (the node closes in the "
                    "background), or with wait, 200 once L1 has paid out",
                    "parameters": [_CHANNEL_PARAM],
                    "requestBody": _body(
                        {
                            "unilateral": {"type": "boolean", "default": False},
                            "wait": {"type": "boolean", "default": False},
                            "timeout": _TIMEOUT,
                        },
                        [],
                    ),
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"channel": _ID, "payouts": _AMOUNTS},
                            },
                            "paid out",
                        ),
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {"channel": _ID, "status": {"const": "closing"}},
                            },
                            "closing",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "Server-sent events: update, l1, channel (docs/http-api.md)",
                    "responses": {
                        "200": {
                            "description": "an endless stream; each event is `event: KIND` "
                            "and `data: JSON` with a `channel` key",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": _ERRORS["401"],
                        "503": _ERRORS["503"],
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_ERRORS},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format), names prefixed bfs_smr_",
                    "responses": {
                        "200": {
                            "description": "the metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _ERRORS["401"],
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the token in the node's DIR/api.token",
                }
            },
            "responses": {
                name: _json(
                    {
                        "type": "object",
                        "properties": {"error": {"type": "string"}},
                        "required": ["error"],
                    },
                    text,
                )
                for name, text in (
                    ("BadRequest", "a bad body, field or id; the error says which"),
                    ("Unauthorized", "no bearer token, or a wrong one"),
                    ("NotFound", "no such channel or route"),
                    ("Conflict", "the channel cannot do that now (its state, on L1 or off)"),
                    ("TooLarge", "the body is over 64 KiB"),
                    (
                        "Busy",
                        "too many requests or streams, or the peer or L1 did not answer "
                        "in time (the operation may still complete)",
                    ),
                )
            },
            "schemas": {
                "Info": {
                    "type": "object",
                    "properties": {
                        "node_id": _ID,
                        "listen": {"type": "string"},
                        "l1": {"type": "string"},
                        "account": {"type": "string"},
                        "channels": {"type": "integer"},
                        "links": {"type": "array", "items": _ID},
                        "rss_bytes": {"type": "integer"},
                        "towers": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Channel": {
                    "type": "object",
                    "description": "a channel as `bfs-smr channel show` gives it",
                    "properties": {
                        "channel": _ID,
                        "app": {"type": "string"},
                        "seq": {"type": "integer"},
                        "phase": {"type": "string"},
                        "l1": {"type": ["string", "null"]},
                        "peer": _ID,
                        "outcome": _AMOUNTS,
                        "state": {},
                        "view": {"type": "object", "description": "the app's view for this node"},
                        "to_move": {"type": ["string", "null"]},
                        "deadline": {"type": ["integer", "null"]},
                        "pending": {"type": "integer"},
                        "forced_seq": {"type": ["integer", "null"]},
                        "payouts": _AMOUNTS,
                    },
                },
                "Committed": {
                    "type": "object",
                    "properties": {
                        "channel": _ID,
                        "seq": {"type": "integer"},
                        "count": {"type": "integer"},
                        "forced": {"type": "boolean"},
                        "deadline": {"type": "integer"},
                    },
                },
            },
        },
    }
