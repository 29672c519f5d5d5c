"""Logging for long-running processes: structlog, human-readable or one JSON object a line.

:func:`get_logger` is the one way runtime code gets a logger. A logger about one channel
or one peer is bound to it (``get_logger(name, channel=cid, peer=node_id)``, or
:func:`bind_ids` on a logger in hand), so every line about it carries the same
``channel`` and ``peer`` fields, rendered by :func:`short_id` in one way.

Nothing secret is ever passed to a logger: identity seeds and the control secret stay in
their files, and peer messages are logged by kind and reason, never by content.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["Logger", "bind_ids", "configure_logging", "get_logger", "short_id"]

Logger = structlog.typing.FilteringBoundLogger

#: Hex digits of a channel or node id shown in log lines: enough to tell ids apart.
SHORT_ID = 16


def configure_logging(*, json: bool = False, level: str = "info") -> None:
    """Send structured log lines to stderr: key=value for people, JSON for machines."""
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(_STDERR),
        cache_logger_on_first_use=False,
    )


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured:
    a stream swapped out since (by a test's capture, or a daemon's redirection) and closed
    must not turn every later log line into ``ValueError: I/O operation on closed file``."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: Any = _Stderr()


def short_id(ident: bytes) -> str:
    """How a channel or node id appears in log lines: its first hex digits."""
    return ident.hex()[:SHORT_ID]


def get_logger(name: str, *, channel: bytes | None = None, peer: bytes | None = None) -> Logger:
    """The logger ``name``, bound to a channel and/or a peer if given."""
    logger: Logger = structlog.get_logger(name)
    return bind_ids(logger, channel=channel, peer=peer)


def bind_ids(log: Logger, *, channel: bytes | None = None, peer: bytes | None = None) -> Logger:
    """``log`` bound to a channel and/or a peer: each line then names them."""
    ids = {}
    if channel is not None:
        ids["channel"] = short_id(channel)
    if peer is not None:
        ids["peer"] = short_id(peer)
    return log.bind(**ids) if ids else log
