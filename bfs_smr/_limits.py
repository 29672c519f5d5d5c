"""Limits on one party's side of a channel: the single place their defaults are set."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LocalError

__all__ = ["MAX_IN_FLIGHT", "ChannelLimits"]

#: The largest pipelining window. A follower holds at most this many updates it signed
#: and has not seen committed; a sequencer that leaves more uncommitted breaks the
#: protocol (docs/protocol.md), so a hostile one cannot grow the follower's memory.
MAX_IN_FLIGHT = 1024


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """How much a party keeps in flight and queued in one channel.

    The in-process pair, the node and the command line (``--max-in-flight``,
    ``--max-batch``; the queue has no flag) all start from these defaults.

    Attributes:
        max_in_flight: the sequencer's bound on proposals awaiting the follower's
            signature (its pipelining window), at most :data:`MAX_IN_FLIGHT`.
        max_batch: most commands the sequencer puts in one update on its own: commands
            that queue while the window is full go out together (a caller's own batch is
            never split below its size).
        max_queue: most commands waiting for a slot in the window; beyond it the
            sequencer refuses its own commands (``LocalError``) and denies the peer's
            requests ("busy"), so a flooding peer cannot grow its memory without bound.

    Raises:
        LocalError: a limit below 1, or a window over :data:`MAX_IN_FLIGHT`.
    """

    max_in_flight: int = 64
    max_batch: int = 64
    max_queue: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_batch", "max_queue"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LocalError(f"{name} must be an integer of at least 1, not {value!r}")
        if self.max_in_flight > MAX_IN_FLIGHT:
            raise LocalError(f"max_in_flight may be at most {MAX_IN_FLIGHT}")
