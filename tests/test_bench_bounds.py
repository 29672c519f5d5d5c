"""``bfs-smr bench`` sets each figure beside its bound and its target (issue 16, item 4):
the arithmetic and the table, on made-up figures (no benchmark runs here; the short run is
in tests/test_cli.py)."""

from __future__ import annotations

import copy
import tempfile
from typing import Any

import pytest
from rich.console import Console

from bfs_smr.cli import bench_table
from bfs_smr.cli._bench import FSYNCS_PER_PAYMENT, commit_seconds, judge, sequential_bound


def _run(rate: float, window: int, k: int, max_batch: int, p99: float = 2.0) -> dict[str, Any]:
    return {
        "payments": 10_000 * k, "payments_per_second": rate, "p50_ms": p99 / 2, "p99_ms": p99,
        "window": window, "k": k, "max_batch": max_batch, "outstanding": 2 * window,
        "seconds": 1.0,
    }  # fmt: skip


def _result(scale: float = 1.0) -> dict[str, Any]:
    """A bench result before :func:`judge`, its speeds times ``scale``."""
    return {
        "sequential": _run(800 * scale, 1, 1, 1, 2.0),
        "pipelined": [
            _run(8_000 * scale, 16, 1, 1, 4.0),
            _run(5_400 * scale, 64, 1, 1, 35.0),
            _run(7_300 * scale, 16, 1, 64, 7.4),
            _run(9_400 * scale, 64, 1, 64, 123.0),
        ],
        "batched": [
            _run(41_000 * scale, 16, 10, 1),
            _run(300_000 * scale, 16, 100, 1),
            _run(1_234_567 * scale, 16, 1_000, 1),
        ],
        "ten_thousand_payments_seconds": 1.85,
        "disk_bytes_per_update": {"sequencer": 230.0, "follower": 229.5},
        "fsync_seconds": 0.0002,
        "round_trip_seconds": 0.0001,
        "crypto_bound_per_second": 9_000.0,
        "channels": {
            "channels": 10_000, "peer_channels": 10_000, "open_seconds": 30.0,
            "rss_before_bytes": 1, "rss_after_bytes": 2, "bytes_per_idle_channel": 1_999.0,
        },
        "in_process": {
            "payments": 10_000, "payments_per_second": 7_300.0 * scale,
            "crypto_bound_per_second": 9_100.0, "ratio": round(7_300 * scale / 9_100, 3),
        },
        "durable_in_process": {
            "payments": 10_000, "payments_per_second": 4_000.0 * scale,
            "disk_bytes_per_update": 218.0,
        },
        "reopen": {"log_entries": 1_000_000, "reopen_seconds": 0.0014},
    }  # fmt: skip


def test_the_sequential_bound_is_two_commits_a_round_trip_and_the_crypto() -> None:
    assert FSYNCS_PER_PAYMENT == 2
    # 2 fsyncs of 200 µs + 100 µs + 1/10,000 s = 600 µs
    assert sequential_bound(0.0002, 0.0001, 10_000) == pytest.approx(1 / 0.0006)


def test_judge_adds_bounds_ratios_and_targets_without_dropping_a_key() -> None:
    before = _result()
    result = copy.deepcopy(before)
    judge(result)
    for key, value in before.items():  # today's keys stay, with their values
        if isinstance(value, dict):
            assert value.items() <= result[key].items()
        elif isinstance(value, list):
            assert all(a.items() <= b.items() for a, b in zip(value, result[key], strict=True))
        else:
            assert result[key] == value
    bound = result["sequential_bound_per_second"]
    assert bound == round(1 / (2 * 0.0002 + 0.0001 + 1 / 9_000), 1) == 1_636.4
    sequential = result["sequential"]
    assert sequential["ratio_to_sequential_bound"] == round(800 / 1_636.4, 3) == 0.489
    assert sequential["ratio_to_crypto_bound"] == round(800 / 9_000, 3)
    assert sequential["met"] is False
    w16, w64 = result["pipelined"][0], result["pipelined"][1]
    assert w16["ratio_to_crypto_bound"] == 0.889 and w16["met"] is True
    assert "target" not in w64 and "met" not in w64
    k10, k100, k1000 = result["batched"]
    assert "target" not in k10
    assert k100["met"] is True and k1000["met"] is True  # 33.3 ≥ 30, 137.2 ≥ 100
    assert result["durable_in_process"]["ratio_to_crypto_bound"] == 0.444
    assert result["ten_thousand_payments"] == {
        "seconds": 1.85, "target": {"max": {"seconds": 1.3}}, "met": False,
    }  # fmt: skip
    assert result["channels"]["met"] is True  # 1,999 ≤ 2,000
    assert result["reopen"]["met"] is True


def test_a_target_is_missed_on_either_of_its_sides() -> None:
    slow = _result(scale=0.9)  # window 16: 7,200/s is 0.8 of 9,000
    judge(slow)
    assert slow["pipelined"][0]["met"] is False
    late = _result()
    late["pipelined"][0]["p99_ms"] = 5.1  # fast enough, but its p99 is past 5 ms
    judge(late)
    assert late["pipelined"][0]["met"] is False


def test_the_table_fits_80_columns_with_large_figures() -> None:
    result = _result(scale=12.0)  # 100,000/s pipelined, 14.8 M/s batched
    result["crypto_bound_per_second"] = 99_999.0
    result["channels"]["bytes_per_idle_channel"] = 123_456.0
    judge(result)
    console = Console(width=200, record=True)
    console.print(bench_table(result))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(lines)
    (w16,) = [line for line in lines if line.startswith("window 16 ")]
    assert "99,999/s" in w16 and "≥ 0.85, p99 ≤ 5 ms ✓" in w16


def test_the_commit_probe_times_commits_to_a_store_it_makes() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert commit_seconds(tmp, commits=5) > 0
        assert commit_seconds(tmp, commits=5) > 0  # the same probe store, again
