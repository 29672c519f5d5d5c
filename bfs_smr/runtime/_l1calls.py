"""Calling an L1 from the event loop: one thread for blocking calls, and the backoff
after failures. The node and the watchtower both use them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["L1_MAX_BACKOFF", "L1Thread", "backoff"]

T = TypeVar("T")

#: Longest wait before the L1 is tried again after failures (the poll interval doubles up
#: to it): short, since a refute must land inside a challenge window.
L1_MAX_BACKOFF = 2.0


def backoff(poll: float, failures: int) -> float:
    """Seconds to wait before trying the L1 again after ``failures`` in a row."""
    if not failures:
        return poll
    delay = min(L1_MAX_BACKOFF, poll * 2.0 ** min(failures, 16))
    return delay * (0.75 + random.random() / 2)


class L1Thread:
    """The one thread every blocking L1 call runs in."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bfs-smr-l1")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the L1 thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
