"""Attacks on the watchtower (docs/watchtower.md, docs/design.md §6: helpers are blind and
powerless), each a test that failed on the code it was written against."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bfs_smr import L1ChannelStatus
from bfs_smr._crypto import Signer
from bfs_smr.runtime._local import LocalPair
from bfs_smr.runtime.tower import locator, seal
from bfs_smr.runtime.tower._protocol import Ack, Put
from tests.test_tower import WINDOW, _Client, _pair, _payments, _tower, _until


def test_a_cheat_cannot_divert_the_tower_to_another_channel_committed_to_the_same_secret(
    tmp_path: Path,
) -> None:
    """The cheat knows the victim channel's watch secret w. It opens a decoy channel of its
    own (both signers its own) whose parameters also commit to w, files the decoy's update at
    a higher seq under the victim's locator, then closes the victim's channel stale. The
    tower must still refute the victim's channel with the victim's newest update: the close
    that revealed w names its channel, and only that channel's entries count."""
    watch = os.urandom(32)
    chain, pair, log = _pair(tmp_path, watch=watch, payments=4)
    cheat, accomplice = pair.alice.signer, Signer(chain.format.scheme, os.urandom(32))
    chain.mint(cheat.public_key, 1_000)
    decoy = LocalPair(
        _payments(),
        alice=cheat,
        bob=accomplice,
        alice_l1=chain.adapter(cheat.public_key),
        bob_l1=chain.adapter(accomplice.public_key),
        deposits=(1_000, 0),
        challenge_window=WINDOW,
        watch=watch,
        nonce=1,
    )
    decoy.open()
    for _ in range(8):
        decoy.alice.chan.issue({"pay": 1})
        decoy.pump()
    assert decoy.params.watch == pair.params.watch
    decoy_newest = decoy.bob.log[-1]
    assert decoy_newest.seq > log[-1].seq
    l1 = f"local:{tmp_path / 'l1.sqlite3'}"
    loc = locator(watch)
    cid = pair.params.channel_id

    async def run() -> None:
        async with _tower(tmp_path, l1) as tower:
            victim, cheat_node = await _Client.dial(tower), await _Client.dial(tower)
            entry = seal(watch, pair.params, log[-1])
            assert entry is not None
            assert await victim.ask(Put(loc, log[-1].seq, entry).encode()) == Ack(loc, log[-1].seq)
            bait = seal(watch, decoy.params, decoy_newest)
            assert bait is not None
            assert await cheat_node.ask(Put(loc, decoy_newest.seq, bait).encode()) == Ack(
                loc, decoy_newest.seq
            )
            pair.alice.l1.unilateral_close(log[1], watch)  # the stale close
            await _until(lambda: chain.channel(cid).registered_seq == log[-1].seq)
            await _until(lambda: chain.channel(cid).status is L1ChannelStatus.SETTLED, 15)

    asyncio.run(run())
    assert chain.channel(cid).payouts == log[-1].update.outcome
    assert chain.channel(decoy.params.channel_id).status is L1ChannelStatus.OPEN
