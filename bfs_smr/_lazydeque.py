"""A first-in first-out queue that holds no storage while it is empty.

An empty :class:`collections.deque` already owns a block of 64 slots: about 760 bytes,
and a party's record (:class:`~bfs_smr._state.ChannelState`) holds four queues that are
empty whenever the channel is idle. :class:`LazyDeque` keeps a deque only while it holds
something, so an idle channel pays about 40 bytes for each (docs/performance.md, memory
per idle channel).

It offers the part of the deque interface the protocol handlers use; anything else is a
type error, so a new use is caught by mypy rather than at run time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["LazyDeque"]

T = TypeVar("T")


class LazyDeque(Generic[T]):
    """A deque that is ``None`` inside while empty (invariant: never an empty deque)."""

    __slots__ = ("_d",)

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._d: deque[T] | None = None
        self.extend(items)

    def append(self, item: T) -> None:
        d = self._d
        if d is None:
            self._d = d = deque()
        d.append(item)

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.append(item)

    def popleft(self) -> T:
        d = self._d
        if d is None:
            raise IndexError("pop from an empty deque")
        item = d.popleft()
        if not d:
            self._d = None
        return item

    def clear(self) -> None:
        self._d = None

    def __len__(self) -> int:
        d = self._d
        return 0 if d is None else len(d)

    def __bool__(self) -> bool:
        return self._d is not None

    def __iter__(self) -> Iterator[T]:
        d = self._d
        return iter(()) if d is None else iter(d)

    def __getitem__(self, index: int) -> T:
        d = self._d
        if d is None:
            raise IndexError("deque index out of range")
        return d[index]

    def __setitem__(self, index: int, item: T) -> None:
        d = self._d
        if d is None:
            raise IndexError("deque index out of range")
        d[index] = item

    def __delitem__(self, index: int) -> None:
        d = self._d
        if d is None:
            raise IndexError("deque index out of range")
        del d[index]
        if not d:
            self._d = None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyDeque):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a deque is

    def __repr__(self) -> str:
        return f"LazyDeque({list(self)!r})"
