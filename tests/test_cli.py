"""The bfs-smr command line, run as a user runs it: the installed script, in a subprocess."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from rich.console import Console

from bfs_smr.cli import bench_table, main

SCRIPT = shutil.which("bfs-smr")


def run(*args):
    cmd = [SCRIPT, *args] if SCRIPT else [sys.executable, "-m", "bfs_smr.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_payments_demo_json_matches_the_done_criteria():
    proc = run("demo", "payments", "--payments", "10000", "--json")
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert result["app"] == "payments"
    assert result["updates"] == 10_000
    assert result["l1_transactions"] == 2
    assert result["payouts"]["bob"] == 10_000
    assert result["payouts"]["alice"] == result["locked"] - 10_000
    assert result["seconds"] > 0 and result["updates_per_second"] > 0


def test_payments_demo_with_amount_and_deposit(capsys):
    assert (
        main(
            ["demo", "payments", "--payments", "50", "--amount", "3", "--deposit", "200", "--json"]
        )
        == 0
    )
    result = last_json(capsys.readouterr().out)
    assert result["locked"] == 200
    assert result["payouts"] == {"alice": 50, "bob": 150}


@pytest.mark.parametrize("app", ["counter", "tictactoe", "dispute"])
def test_other_demos_exit_zero_with_json(app, capsys):
    assert main(["demo", app, "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    for key in (
        "app",
        "updates",
        "l1_transactions",
        "locked",
        "payouts",
        "seconds",
        "updates_per_second",
    ):
        assert key in result
    assert sum(result["payouts"].values()) == result["locked"]


def test_counter_returns_deposits(capsys):
    assert main(["demo", "counter", "--increments", "10", "--deposit", "7", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["count"] == 10 and result["payouts"] == {"alice": 7, "bob": 7}


def test_tictactoe_reaches_a_result(capsys):
    assert main(["demo", "tictactoe", "--seed", "1", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["result"] in ("alice wins", "bob wins", "draw")
    expected = {"alice wins": (200, 0), "bob wins": (0, 200), "draw": (100, 100)}[result["result"]]
    assert (result["payouts"]["alice"], result["payouts"]["bob"]) == expected
    assert result["l1_transactions"] == 3  # open, Bob's deposit, cooperative close


def test_dispute_pays_by_the_newest_and_the_force_mover_wins(capsys):
    assert main(["demo", "dispute", "--seed", "2", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    stale = result["stale_close"]
    assert stale["refuted"] and stale["newest_seq"] > stale["stale_seq"]
    assert stale["payouts"] == {"alice": 650, "bob": 350}  # 100 + 5 x 50 paid to Bob
    assert result["force_move"]["payouts"] == {"alice": 200, "bob": 0}


def test_the_dispute_demo_says_what_happened():
    proc = run("demo", "dispute", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    told = " ".join(proc.stdout.split())  # the story is folded to the terminal's width
    for words in (
        "Alice cheated: she closed on L1 alone with the stale seq 1, where Bob holds only 100.",
        "Bob's watcher refuted it within the 600 s window with seq 6",
        "L1 paid by seq 6: Alice 650, Bob 350. The cheat gained nothing.",
        "Bob went silent",
        "forced her move on L1 as seq",
        "so he forfeits: L1 paid Alice 200, Bob 0.",
    ):
        assert words in told, proc.stdout
    assert "paid to alice" in proc.stdout  # and the figures, as before


def test_human_output_is_a_table():
    proc = run("demo", "payments", "--payments", "20")
    assert proc.returncode == 0
    assert "updates committed" in proc.stdout and "paid to bob" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["demo", "nosuchapp"], "invalid choice"),
        (["demo", "payments", "--payments", "0"], "at least 1"),
        (["demo", "payments", "--payments", "-5"], "at least 1"),
        (["demo", "payments", "--payments", "ten"], "not a whole number"),
        (
            ["demo", "payments", "--payments", "10", "--amount", "100", "--deposit", "50"],
            "more than the deposit",
        ),
        (["demo", "payments", "--bogus"], "unrecognized"),
        (["nosuchcommand"], "invalid choice"),
        ([], "required"),
        (["demo", "dispute", "--l1", "ropsten"], "is not an L1"),
        (["demo", "dispute", "--l1", "evm:localhost:8545"], "evm:http://HOST:PORT"),
        (["demo", "dispute", "--l1", "evm:http://127.0.0.1:9"], "no EVM node answers"),
        (["demo", "payments", "--l1", "evm", "--rpc", "http://127.0.0.1:9"], "no EVM node answers"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle):
    proc = run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One short ``bfs-smr bench --json`` run (about a minute), for the tests that read it."""
    chart = tmp_path_factory.mktemp("bench") / "bench.png"
    args = ["bench", "--payments", "300", "--channels", "20", "--reopen-entries", "1000"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--chart", str(chart), "--json"]) == 0
    return last_json(out.getvalue()), chart


def test_bench_json_keys(bench_run):
    result, chart = bench_run
    bound = result["crypto_bound_per_second"]
    sequential = result["sequential"]
    assert sequential["payments"] == 300 and sequential["window"] == 1
    pipelined = [(p["window"], p["max_batch"]) for p in result["pipelined"]]
    assert pipelined == [(16, 1), (64, 1), (16, 64), (64, 64)]
    assert [b["k"] for b in result["batched"]] == [10, 100, 1_000]
    for entry in [sequential, *result["pipelined"], *result["batched"]]:
        assert 0 < entry["p50_ms"] <= entry["p99_ms"]
        assert entry["payments"] >= 300 and entry["payments"] % entry["k"] == 0
        assert entry["ratio_to_crypto_bound"] == pytest.approx(
            entry["payments_per_second"] / bound, abs=0.002
        )
    assert result["ten_thousand_payments_seconds"] > 0
    disk = result["disk_bytes_per_update"]
    assert 100 < disk["sequencer"] < 5_000 and 100 < disk["follower"] < 5_000
    assert result["channels"]["channels"] == result["channels"]["peer_channels"] == 20
    figures = result["in_process"]
    assert set(figures) >= {"payments_per_second", "crypto_bound_per_second", "ratio"}
    assert figures["ratio"] == pytest.approx(
        figures["payments_per_second"] / figures["crypto_bound_per_second"], rel=0.01
    )
    assert result["chart"] == str(chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_bench_sets_each_figure_beside_its_bound_and_target(bench_run):
    """The bounds measured in the run, each figure's ratio to its bound as the JSON prints
    both, and whether each target was met, as its own target says (no time asserted)."""
    result, _ = bench_run
    crypto, fsync = result["crypto_bound_per_second"], result["fsync_seconds"]
    trip, bound = result["round_trip_seconds"], result["sequential_bound_per_second"]
    assert 0 < fsync < 1 and 0 < trip < 1
    assert bound == pytest.approx(1 / (2 * fsync + trip + 1 / crypto), abs=0.06)
    assert bound < crypto
    sequential = result["sequential"]
    assert sequential["ratio_to_sequential_bound"] == pytest.approx(
        sequential["payments_per_second"] / bound, abs=0.0006
    )
    durable = result["durable_in_process"]
    assert durable["ratio_to_crypto_bound"] == pytest.approx(
        durable["payments_per_second"] / crypto, abs=0.0006
    )
    assert result["ten_thousand_payments"]["seconds"] == result["ten_thousand_payments_seconds"]
    targeted = {
        "in_process": result["in_process"],
        "sequential": sequential,
        "ten_thousand_payments": result["ten_thousand_payments"],
        "channels": result["channels"],
        "reopen": result["reopen"],
    }
    for p in result["pipelined"]:
        targeted[f"pipelined {p['window']} {p['max_batch']}"] = p
    for b in result["batched"]:
        targeted[f"batched {b['k']}"] = b
    with_target = {name for name, entry in targeted.items() if "target" in entry}
    assert with_target == {
        "in_process", "sequential", "ten_thousand_payments", "channels", "reopen",
        "pipelined 16 1", "batched 100", "batched 1000",
    }  # fmt: skip
    assert result["in_process"]["target"] == {"min": {"ratio": 0.8}}
    assert sequential["target"] == {"min": {"ratio_to_sequential_bound": 0.8}}
    for name in with_target:
        entry = targeted[name]
        least, most = entry["target"].get("min", {}), entry["target"].get("max", {})
        assert least or most
        met = all(entry[k] >= v for k, v in least.items())
        met = met and all(entry[k] <= v for k, v in most.items())
        assert entry["met"] is met, name


def test_bench_table_fits_80_columns_and_shows_each_ratio(bench_run):
    result, _ = bench_run
    console = Console(width=200, record=True)
    console.print(bench_table(result))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    (sequential,) = [line for line in lines if line.startswith("sequential ")]
    bound = result["sequential_bound_per_second"]
    assert f"{bound:,.0f}/s" in sequential
    assert f"{result['sequential']['ratio_to_sequential_bound']:.2f}" in sequential
    assert ("✓" in sequential) is result["sequential"]["met"]


def test_payments_demo_on_the_evm_uses_two_l1_transactions(capsys):
    pytest.importorskip("bfs_smr.adapters.evm")
    assert main(["demo", "payments", "--l1", "evm", "--payments", "30", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["l1"] == "evm" and result["updates"] == 30
    assert result["l1_transactions"] == 2
    assert result["payouts"] == {"alice": 30, "bob": 30}


def test_gas_report_json_on_the_embedded_chain(capsys):
    pytest.importorskip("bfs_smr.adapters.evm")
    assert main(["gas", "--embedded", "--json"]) == 0
    gas = last_json(capsys.readouterr().out)
    keys = {"deploy", "open", "cooperative_close", "unilateral_close", "refute", "settle"}
    assert keys | {"happy_path_total", "dispute_path_total"} <= set(gas)
    assert gas["happy_path_total"] == gas["open"] + gas["cooperative_close"]
    assert gas["dispute_path_total"] == gas["unilateral_close"] + gas["refute"] + gas["settle"]


def test_evm_options_without_evm_are_a_usage_error():
    proc = run("demo", "payments", "--key", "00")
    assert proc.returncode == 2 and "--l1 evm" in proc.stderr


@pytest.mark.parametrize("json_flag", [True, False])
def test_output_to_a_reader_that_went_away_is_not_a_traceback(tmp_path, json_flag):
    """``bfs-smr … | head``: the reader closes the pipe before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the writer's first write fails with EPIPE
    cmd = [SCRIPT] if SCRIPT else [sys.executable, "-m", "bfs_smr.cli"]
    cmd += ["init", "--data-dir", str(tmp_path / "node")] + (["--json"] if json_flag else [])
    try:
        proc = subprocess.run(
            cmd, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert (tmp_path / "node").is_dir()  # the command itself was carried out
