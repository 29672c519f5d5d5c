"""Attacks on the watchtower (docs/watchtower.md, docs/design.md §6: helpers are blind and
powerless), each a test that failed on the code it was written against."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from bfs_smr import L1ChannelStatus
from bfs_smr._crypto import Ed25519, Signer
from bfs_smr.runtime import transport
from bfs_smr.runtime._local import LocalPair
from bfs_smr.runtime.node._towers import TowerClient
from bfs_smr.runtime.tower import SLOT_SIZE, locator, seal
from bfs_smr.runtime.tower._protocol import VERSION, Ack, Put, Welcome
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


def test_a_tower_that_floods_its_node_with_unasked_frames_is_dropped(tmp_path: Path) -> None:
    """A hostile tower answers the welcome with thousands of frames nobody asked for. The
    node's link task queued every one (memory without bound, on the event loop its payments
    run on, and every later answer shifted onto the wrong put); it must drop the link at the
    first frame it did not ask for."""
    flood = 3_000

    async def run() -> None:
        tower_key = Signer(Ed25519(), os.urandom(32))
        links: list[transport.Link] = []

        def on_link(link: transport.Link) -> None:
            links.append(link)
            link.set_receiver(lambda _l, _f: None)
            link.send(Welcome(VERSION, SLOT_SIZE).encode())
            link.send_many(Ack(os.urandom(32), 1).encode() for _ in range(flood))

        server = await transport.serve("127.0.0.1", 0, tower_key, on_link)
        port = server.sockets[0].getsockname()[1]
        client = TowerClient(
            tower_key.public_key,
            f"127.0.0.1:{port}",
            Signer(Ed25519(), os.urandom(32)),
            {},
            secret_of=lambda _c: None,
        )
        task = asyncio.create_task(client.run())
        try:
            await _until(
                lambda: bool(links) and (links[0].closed.done() or client._replies.qsize() >= flood)
            )
            assert links[0].closed.done(), f"the node queued {client._replies.qsize()} frames"
            assert client._replies.qsize() == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            server.close()

    asyncio.run(run())
