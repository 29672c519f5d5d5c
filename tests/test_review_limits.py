"""Review of issue 12: a channel's limits changed after it was made still take effect.

``bfs-smr channel bench --window N --max-batch M`` (the node's ``bench`` op) sets the
sequencer's ``max_in_flight`` and ``max_batch`` for the run on the live channel. Before
the Channel split the sequencer read those attributes; after it the handlers read the
``ChannelLimits`` in the channel's state record, so setting them changed nothing and
every bench ran at the default window and batching (64, 64) whatever was asked.
"""

from __future__ import annotations

from dataclasses import replace

from bfs_smr import ChannelLimits, SendMessage
from bfs_smr._messages import Propose, parse_message
from bfs_smr.runtime import memory_pair


def _proposals(effects: list[object]) -> int:
    return sum(
        1
        for e in effects
        if isinstance(e, SendMessage) and isinstance(parse_message(e.data), Propose)
    )


def test_setting_the_window_on_a_live_channel_bounds_what_is_in_flight() -> None:
    _, pair = memory_pair("payments", (100, 0))
    pair.open()
    chan = pair.alice.chan
    chan.limits = replace(chan.limits, max_in_flight=1, max_batch=1)  # as the bench op does
    for _ in range(3):
        chan.issue({"pay": 1})
    assert _proposals(chan.effects()) == 1, "the window of 1 was not applied"
    assert len(chan.in_flight()) == 1


def test_setting_the_batch_on_a_live_channel_bounds_each_update() -> None:
    _, pair = memory_pair("payments", (100, 0), limits=ChannelLimits(max_in_flight=1))
    pair.open()
    chan = pair.alice.chan
    chan.limits = replace(chan.limits, max_batch=2)
    for _ in range(5):
        chan.issue({"pay": 1})
    pair.pump()
    sizes = [len(u.update.commands) for u in pair.alice.log[1:]]
    assert max(sizes) <= 2, sizes
