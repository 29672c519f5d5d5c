"""``bfs-smr tower bench`` run small, as a user runs it: its invariants, never its timings.

The bench starts a real ``tower run`` process on a local L1 file, puts one sealed entry per
channel from several node identities over the transport, replaces one channel's entry
through many real updates, and has the other party close that channel with an old update
(docs/performance.md, "Watchtower").
"""

from __future__ import annotations

from typing import Any

import pytest
from nodeproc import cli

from bfs_smr.cli import main

CHANNELS = 300
NODES = 3
UPDATES = 200
#: Bytes of an entry's row: client id, locator, 8-byte seq, and the sealed entry.
ROW_OVERHEAD = 32 + 32 + 8


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    result = cli(
        "tower", "bench", "--channels", str(CHANNELS), "--nodes", str(NODES),
        "--updates", str(UPDATES), "--window", "4", "--json",
        timeout=240,
    )  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    assert "entries put" in result.stderr  # progress goes to stderr, the JSON alone to stdout
    value: dict[str, Any] = result.json
    return value


def test_the_tower_holds_every_channel_put(bench: dict[str, Any]) -> None:
    assert bench["channels"] == CHANNELS and bench["nodes"] == NODES
    assert bench["channels_held"] == CHANNELS
    assert bench["channels_answered"] == CHANNELS  # each node's query gives back its seqs
    puts = bench["puts"]  # new entries, then each replaced (the watched channel's aside)
    assert puts["first"]["puts"] == puts["replace"]["puts"] == CHANNELS - 1
    assert bench["refusals"] == 0


def test_an_entry_is_the_same_bytes_after_few_and_many_updates(bench: dict[str, Any]) -> None:
    constant = bench["constant"]
    few, many = constant["few"], constant["many"]
    assert (few["seq"], many["seq"]) == (10, UPDATES)
    assert few["row_bytes"] == many["row_bytes"] == ROW_OVERHEAD + bench["entry_bytes"]
    assert bench["entry_bytes"] == bench["slot_bytes"] + 40  # nonce and tag
    assert 10 < constant["puts"] <= UPDATES  # coalesced, and more than the first ten
    assert bench["disk"]["row_bytes"] == many["row_bytes"]
    # and the store's pages in use did not grow either: no entry keeps its history
    assert few["store_bytes"] == many["store_bytes"]


def test_the_stale_close_is_refuted_with_the_newest_update(bench: dict[str, Any]) -> None:
    refute = bench["refute"]
    assert refute["registered_seq"] == 10
    assert refute["refuted_seq"] == UPDATES
    assert refute["payouts"] == refute["expected_payouts"] == [0, UPDATES]
    assert refute["stale_payouts"] == [UPDATES - 10, 10]
    assert refute["refute_seconds"] is not None
    assert refute["poll_interval_seconds"] > 0 and refute["window_seconds"] == 4


def test_memory_and_disk_are_measured(bench: dict[str, Any]) -> None:
    memory, disk = bench["memory"], bench["disk"]
    assert memory["rss_after_bytes"] >= memory["rss_start_bytes"] > 0
    assert memory["bytes_per_channel"] == pytest.approx(
        (memory["rss_after_bytes"] - memory["rss_before_bytes"]) / CHANNELS, abs=0.1
    )
    # At rest the store holds every entry's row at least.
    assert disk["stopped_bytes"] >= CHANNELS * disk["row_bytes"]
    assert disk["store_bytes"] - disk["store_bytes_before"] >= CHANNELS * disk["row_bytes"]
    assert disk["db_bytes"] > 0 and bench["puts"]["fsyncs_per_second"] > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--channels", "2", "--nodes", "3"], "--nodes"),
        (["--updates", "10"], "--updates"),
        (["--window", "1"], "--window"),
    ],
)
def test_bad_bench_options_are_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tower", "bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err, err
