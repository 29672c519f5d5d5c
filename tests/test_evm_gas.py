"""The adjudicator meets docs/design.md §7's gas targets, measured from real receipts."""

from __future__ import annotations

from bfs_smr.adapters.evm.gas import (
    DISPUTE_PATH_TARGET,
    FORCE_MOVE_TARGET,
    HAPPY_PATH_TARGET,
    gas_report,
)

KEYS = {
    "deploy",
    "open",
    "cooperative_close",
    "unilateral_close",
    "refute",
    "settle",
    "happy_path_total",
    "dispute_path_total",
    "force_move",
    "force_answer",
}


def check(report: dict[str, int]) -> None:
    assert set(report) == KEYS
    assert all(type(v) is int and v > 21_000 for v in report.values())
    assert report["happy_path_total"] == report["open"] + report["cooperative_close"]
    assert report["dispute_path_total"] == (
        report["unilateral_close"] + report["refute"] + report["settle"]
    )
    assert report["happy_path_total"] <= HAPPY_PATH_TARGET, report
    assert report["dispute_path_total"] <= DISPUTE_PATH_TARGET, report
    assert report["force_move"] <= FORCE_MOVE_TARGET, report


def test_gas_on_the_embedded_chain() -> None:
    check(gas_report())


def test_gas_on_anvil(anvil_url: str) -> None:
    report = gas_report(anvil_url)
    check(report)
    embedded = gas_report()
    # Same bytecode, same EVM rules: the figures agree to within calldata noise.
    for key in ("open", "cooperative_close", "unilateral_close", "refute", "settle", "force_move"):
        assert abs(report[key] - embedded[key]) <= 200, (key, report[key], embedded[key])
