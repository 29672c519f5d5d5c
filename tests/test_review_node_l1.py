"""Review of issue 12: a node started on another L1 than its channels' says so.

Restarting a node with a different ``--l1`` (another local L1 file, a typo in the path
that names an existing file) refused to start with "channel … is damaged: stored head is
not a doubly-signed update of this channel": the store is fine, the L1 is not the one the
channels were opened on (their signatures are in that L1's domain).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import LocalError
from bfs_smr.plugins import L1Connection
from bfs_smr.runtime import memory_pair
from bfs_smr.runtime.node._channels import ChannelLoader
from bfs_smr.runtime.store import Store


def test_a_channel_of_another_l1_is_named_so_not_damaged(tmp_path: Path) -> None:
    first = MemoryL1(chain_id="first")
    store = Store(tmp_path / "alice")
    _, pair = memory_pair("payments", (100, 0), chain=first, stores=(store, Store(tmp_path / "b")))
    pair.open()
    pair.alice.chan.issue({"pay": 5})
    pair.pump()
    other = MemoryL1(chain_id="second")
    assert other.format.domain != first.format.domain
    signer = pair.alice.signer
    l1 = L1Connection(other.adapter(signer.public_key), signer, 3_600)
    load = ChannelLoader({}, store, l1, signer, pair.limits)
    with pytest.raises(LocalError, match="another L1") as caught:
        load(pair.params.channel_id)
    assert "damaged" not in str(caught.value)
