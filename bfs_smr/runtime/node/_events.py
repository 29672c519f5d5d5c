"""The node's event hub: what happened, told to every live event stream (``GET /v1/events``).

The node publishes three kinds of event (docs/http-api.md): ``update`` (a committed
update), ``l1`` (a channel's L1 status, deadline or payouts changed) and ``channel`` (a
channel appeared or its phase changed). Each subscriber has its own queue of at most
:data:`MAX_QUEUE` events: one that falls that far behind is dropped (its stream ends, the
client reconnects and reads the state afresh), so a slow reader never makes the node
buffer without bound. At most :data:`MAX_STREAMS` subscribers at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["KINDS", "MAX_QUEUE", "MAX_STREAMS", "EventHub", "Subscription"]

#: Live event streams at once; another is refused (503).
MAX_STREAMS = 64
#: Events queued for one stream; a stream further behind is dropped.
MAX_QUEUE = 1024
#: The kinds of event, as sent in the stream's ``event:`` lines.
KINDS = ("update", "l1", "channel")


class Subscription:
    """One stream's queue of ``(kind, data)`` events."""

    def __init__(self, hub: EventHub, max_queue: int) -> None:
        self._hub = hub
        self._max = max_queue
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._ready = asyncio.Event()
        self.dropped = False  # too far behind: no more events for it
        self.ended = False  # the node is stopping

    def put(self, kind: str, data: dict[str, Any]) -> None:
        if self.dropped:
            return
        if len(self._queue) >= self._max:
            self.dropped = True  # too far behind: its stream ends, nothing more is kept
            self._queue.clear()
            self._hub.unsubscribe(self)
        else:
            self._queue.append((kind, data))
        self._ready.set()

    async def get(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next event, or None if none came within ``timeout`` seconds or the
        subscription was dropped or ended (see :attr:`dropped`, :attr:`ended`)."""
        if not self._queue and not self.dropped and not self.ended:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.dropped or self.ended or not self._queue:
            return None
        return self._queue.popleft()

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def end(self) -> None:
        """Wake the stream's reader to end it (the node is stopping)."""
        self.ended = True
        self._ready.set()


class EventHub:
    """Fans each event out to every subscriber's bounded queue."""

    def __init__(self, *, max_streams: int = MAX_STREAMS, max_queue: int = MAX_QUEUE) -> None:
        self.max_streams = max_streams
        self.max_queue = max_queue
        self._subs: dict[Subscription, None] = {}

    @property
    def listening(self) -> bool:
        """Whether anyone subscribes (events are only built then)."""
        return bool(self._subs)

    def subscribe(self) -> Subscription | None:
        """A new subscription, or None if :attr:`max_streams` are live."""
        if len(self._subs) >= self.max_streams:
            return None
        sub = Subscription(self, self.max_queue)
        self._subs[sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)

    def end_all(self) -> None:
        """End every subscription (the node is stopping)."""
        for sub in list(self._subs):
            sub.end()

    def publish(self, kind: str, make: Callable[[], dict[str, Any]]) -> None:
        """Tell every subscriber; ``make`` builds the event's data, only if anyone listens."""
        if not self._subs:
            return
        assert kind in KINDS
        data = make()
        for sub in list(self._subs):
            sub.put(kind, data)
