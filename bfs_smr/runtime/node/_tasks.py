"""The node's background work: its tasks, and the one thread that talks to the L1.

Blocking L1 calls run in one worker thread (the adapter is used from that thread only);
everything else runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bfs_smr.runtime._l1calls import L1_MAX_BACKOFF, L1Thread, backoff
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.store import StoreError

__all__ = ["L1_MAX_BACKOFF", "Background", "L1Thread", "backoff"]

T = TypeVar("T")

_log = get_logger("bfs_smr.node")


class Background:
    """The node's background tasks.

    Args:
        stop: asks the node to stop; called when a task that guards funds fails, or any
            task fails on the store.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, guards_funds: bool = False) -> None:
        """Run ``coro`` in the background. If a task that ``guards_funds`` (the L1 watch,
        L1 actions) fails, the node stops: running on without it would take payments it
        can no longer defend on L1."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, guards_funds=guards_funds))

    def _done(self, task: asyncio.Task[Any], *, guards_funds: bool) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            _log.error("background task failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, StoreError):
                self._stop()  # the store cannot be written: stop rather than act on a guess
            elif guards_funds:
                _log.error(
                    "the L1 guard cannot go on: stopping",
                    reason=f"{type(exc).__name__}: {exc}",
                )
                self._stop()

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
