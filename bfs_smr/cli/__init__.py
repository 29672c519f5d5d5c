"""The ``bfs-smr`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from bfs_smr import __version__
from bfs_smr._build import build_description
from bfs_smr._errors import BfsSmrError
from bfs_smr.cli import _bench, _bench_nodes, _demo
from bfs_smr.cli._chart import write_chart
from bfs_smr.cli._node_commands import (
    DATA_DIR_ENV,
    L1_ENV,
    NODE_COMMANDS,
    add_node_commands,
    print_human,
    run_node_command,
)
from bfs_smr.cli._tower_commands import add_tower_commands, run_tower_command

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        if "required" in message:
            for flag, env in (("--data-dir", DATA_DIR_ENV), ("--l1", L1_ENV)):
                if flag in message:
                    message += f" (or set {env})"
        raise _UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help and --version end here: no SystemExit out of main()
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _demo_l1(text: str) -> tuple[str, str | None]:
    """``memory``, ``evm`` or ``evm:URL`` (a node such as anvil): the L1 and its RPC URL."""
    if text in ("memory", "evm"):
        return text, None
    kind, _, url = text.partition(":")
    if kind == "evm" and url.startswith(("http://", "https://")):
        return "evm", url
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an L1: give memory, evm or evm:http://HOST:PORT"
    )


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="bfs-smr",
        description="Two-party channels on a signed, replicated log.",
        epilog=f"A channel is named by its id or any unique prefix of 8+ hex digits. "
        f"${DATA_DIR_ENV} and ${L1_ENV} stand for --data-dir and --l1 when not given. "
        "Every command takes --json (one JSON object, the last line of stdout); an error is "
        "one line on stderr and exit code 2.",
    )
    parser.add_argument(
        "--version", action="version", version=f"bfs-smr {__version__} ({build_description()})"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run a bundled demo on an embedded L1")
    apps = demo.add_subparsers(dest="app", required=True, parser_class=_Parser)

    pay = apps.add_parser("payments", help="Alice pays Bob N times, then both close")
    pay.add_argument("--payments", type=_positive, default=10_000, metavar="N")
    pay.add_argument("--amount", type=_positive, default=1, metavar="A")
    pay.add_argument(
        "--deposit", type=_positive, default=None, metavar="D", help="default: 2 × N × A"
    )
    pay.add_argument("--l1", choices=["memory", "evm"], default="memory", help="which L1")
    pay.add_argument("--rpc", metavar="URL", help="with --l1 evm: a node (e.g. anvil) to use")
    pay.add_argument("--key", metavar="HEX", help="with --l1 evm: Alice's private key")
    pay.add_argument("--json", action="store_true", help="print one JSON object")

    counter = apps.add_parser("counter", help="both parties increment a counter")
    counter.add_argument("--increments", type=_positive, default=1_000, metavar="N")
    counter.add_argument("--deposit", type=_positive, default=100, metavar="D")
    counter.add_argument("--json", action="store_true")

    ttt = apps.add_parser("tictactoe", help="a whole game with a stake, to a result")
    ttt.add_argument("--stake", type=_positive, default=100)
    ttt.add_argument("--seed", type=int, default=None, help="seed for the players' moves")
    ttt.add_argument("--json", action="store_true")

    dispute = apps.add_parser("dispute", help="a stale close refuted, and a win by force move")
    dispute.add_argument("--seed", type=int, default=None)
    dispute.add_argument(
        "--l1",
        type=_demo_l1,
        default=("memory", None),
        metavar="L1",
        help="memory (default), evm (the adjudicator on an in-process chain) or evm:URL "
        "(on a node such as anvil)",
    )
    dispute.add_argument("--json", action="store_true")

    gas = sub.add_parser("gas", help="gas of the EVM adjudicator, from real receipts")
    gas.add_argument("--rpc", metavar="URL", help="a node to use (default: start anvil)")
    gas.add_argument("--embedded", action="store_true", help="use the in-process py-evm chain")
    gas.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="measure throughput against the crypto bound")
    bench.add_argument(
        "--payments",
        type=_positive,
        default=10_000,
        metavar="N",
        help="payments per run between the two nodes (default 10,000)",
    )
    bench.add_argument(
        "--reopen-entries",
        type=_positive,
        default=1_000_000,
        metavar="N",
        help="log length for the reopen measurement",
    )
    bench.add_argument(
        "--channels",
        type=_positive,
        default=1_000,
        metavar="N",
        help="idle channels to open on one node, for its memory per channel",
    )
    bench.add_argument(
        "--chart",
        metavar="PNG",
        help="draw payments/s against window and batch size (needs the chart extra)",
    )
    bench.add_argument(
        "--json", action="store_true", help="print one JSON object: each figure, its bound"
    )
    add_node_commands(sub)
    add_tower_commands(sub)
    return parser


@contextmanager
def _progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


def _print_story(lines: list[str]) -> None:
    """What a demo did, one paragraph a step, folded to the terminal's width."""
    from rich.console import Console

    console = Console(highlight=False)
    for line in lines:
        console.print(line, markup=False)


def _summary(result: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("app", result["app"]),
        ("updates committed", f"{result['updates']:,}"),
        ("L1 transactions", result["l1_transactions"]),
        ("locked on L1", f"{result['locked']:,}"),
    ]
    rows += [(f"paid to {name}", f"{amount:,}") for name, amount in result["payouts"].items()]
    rows += [("seconds", f"{result['seconds']:.3f}")]
    if result.get("updates_per_second"):
        rows.append(("updates/s", f"{result['updates_per_second']:,.0f}"))
    for key in ("result", "count"):
        if key in result:
            rows.append((key, result[key]))
    return rows


#: How each targeted key reads in the table: before and after its value.
_TARGET_TEXT = {
    "p99_ms": ("p99 ", " ms"),
    "seconds": ("", " s"),
    "reopen_seconds": ("", " s"),
    "bytes_per_idle_channel": ("", " B"),
    "bytes": ("", " B"),
}


def _target_text(entry: dict[str, Any]) -> str:
    if "target" not in entry:
        return ""
    parts = []
    for sign, key in (("≥", "min"), ("≤", "max")):
        for name, value in entry["target"].get(key, {}).items():
            before, after = _TARGET_TEXT.get(name, ("", ""))
            parts.append(f"{before}{sign} {value:,g}{after}")
    return ", ".join(parts) + (" ✓" if entry["met"] else " ✗")


def bench_table(result: dict[str, Any]) -> Any:
    """``bfs-smr bench``'s figures, each beside its bound, ratio and target: a rich Table
    that fits 80 columns."""
    from rich.table import Table

    crypto = result["crypto_bound_per_second"]
    sequential_bound = result["sequential_bound_per_second"]
    table = Table(
        title="bfs-smr bench: each figure beside its bound, measured in this run",
        caption=(
            f"bound: the crypto bound (2 signs + 2 verifies a payment), {crypto:,.0f}/s; "
            f"for sequential, 1 / ({_bench.FSYNCS_PER_PAYMENT} fsyncs + round trip + crypto) "
            f"with one fsync'd commit {result['fsync_seconds'] * 1e6:,.0f} µs and a loopback "
            f"round trip {result['round_trip_seconds'] * 1e6:,.0f} µs. ✓ / ✗: target met or not."
        ),
        caption_justify="left",
        box=None,
        pad_edge=False,
        header_style="bold underline",
    )
    table.add_column("figure")
    for name in ("measured", "bound", "ratio"):
        table.add_column(name, justify="right")
    table.add_column("target", justify="left")

    def rate(entry: dict[str, Any]) -> str:
        return f"{entry['payments_per_second']:,.0f}/s"

    def ms(value: float) -> str:
        return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"

    crypto_text = f"{crypto:,.0f}/s"
    in_process, durable = result["in_process"], result["durable_in_process"]
    sequential = result["sequential"]
    rows = [
        (
            "in process",
            rate(in_process),
            f"{in_process['crypto_bound_per_second']:,.0f}/s",  # its own, measured around it
            f"{in_process['ratio']:.2f}",
            in_process,
        ),
        ("  durable", rate(durable), crypto_text, f"{durable['ratio_to_crypto_bound']:.2f}", {}),
        (
            "sequential",
            f"{rate(sequential)} p50 {sequential['p50_ms']:.2f} ms",
            f"{sequential_bound:,.0f}/s",
            f"{sequential['ratio_to_sequential_bound']:.2f}",
            sequential,
        ),
    ]
    for p in result["pipelined"]:
        name = f"window {p['window']}" + (", batched" if p["max_batch"] > 1 else "")
        measured = f"{rate(p)} p99 {ms(p['p99_ms'])}"
        rows.append((name, measured, crypto_text, f"{p['ratio_to_crypto_bound']:.2f}", p))
    for b in result["batched"]:
        ratio = f"{b['ratio_to_crypto_bound']:.1f}"
        rows.append((f"batches, k = {b['k']:,}", rate(b), crypto_text, ratio, b))
    ten, channels, reopen = result["ten_thousand_payments"], result["channels"], result["reopen"]
    disk = result["disk_bytes_per_update"]
    # Not a key of its own in the JSON (its entry holds only the two stores' figures).
    disk_target = {
        "target": {"max": {"bytes": 256}},
        "met": max(disk["sequencer"], disk["follower"]) <= 256,
    }
    rows += [
        ("10,000 payments", f"{ten['seconds']:.2f} s", "", "", ten),
        ("disk / update", f"{disk['sequencer']:,.0f} / {disk['follower']:,.0f} B", "", "",
         disk_target),
        ("per idle channel", f"{channels['bytes_per_idle_channel']:,.0f} B", "", "", channels),
        (f"reopen ({reopen['log_entries']:,})", f"{reopen['reopen_seconds']:.4f} s", "", "",
         reopen),
    ]  # fmt: skip
    for *cells, entry in rows:
        table.add_row(*cells, _target_text(entry))
    return table


def _print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    console.print(bench_table(result))
    if "chart" in result:
        console.print(f"chart: {result['chart']}")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    show = not args.json
    if args.command == "tower":
        result = run_tower_command(args)
        if show and args.tower_command == "init":
            print_human("tower init", result)
        return result
    if args.command in NODE_COMMANDS:
        result = run_node_command(args)
        if show and args.command != "node":
            print_human(args.command, result)
        return result
    if args.command == "gas":
        result = _gas(args)
        if show:
            _print_table(
                "bfs-smr gas (from receipts, 21,000 base included)",
                [(k, f"{v:,}") for k, v in result.items()],
            )
        return result
    if args.command == "bench":
        with _progress_bar("in-process payments", show) as progress:
            figures = _bench.bench_in_process(args.payments, progress=progress)
        with _progress_bar("durable payments", show) as progress:
            durable = _bench.bench_durable(args.payments)
            progress(1, 2)
            reopen = _bench.bench_reopen(args.reopen_entries)
        with _progress_bar("two node processes: sequential, pipelined, batched", show) as p:
            nodes = _bench_nodes.bench_throughput(args.payments, progress=p)
        with _progress_bar("idle channels on one node", show) as progress:
            channels = _bench_nodes.bench_idle_channels(args.channels, progress=progress)
        # The bound again after the node runs, averaged with the first: the same machine
        # state for both sides of each ratio.
        bound = (figures["crypto_bound_per_second"] + _bench.crypto_bound(args.payments)) / 2
        result = {
            **nodes,
            "crypto_bound_per_second": round(bound, 1),
            "channels": channels,
            "in_process": figures,
            "durable_in_process": durable,
            "reopen": reopen,
        }
        _bench.judge(result)
        if args.chart:
            result["chart"] = str(write_chart(result, args.chart))
        if show:
            _print_bench(result)
        return result
    if args.app == "payments":
        if args.l1 == "memory" and (args.rpc or args.key):
            raise _UsageError("--rpc and --key go with --l1 evm")
        with _progress_bar("payments", show) as progress:
            result = _demo.demo_payments(
                args.payments,
                args.amount,
                args.deposit,
                progress=progress,
                l1=args.l1,
                rpc=args.rpc,
                key=args.key,
            )
    elif args.app == "counter":
        with _progress_bar("increments", show) as progress:
            result = _demo.demo_counter(args.increments, args.deposit, progress=progress)
    elif args.app == "tictactoe":
        result = _demo.demo_tictactoe(args.stake, args.seed)
    else:
        kind, rpc = args.l1
        result = _demo.demo_dispute(args.seed, l1=kind, rpc=rpc)
    if show:
        _print_table(f"bfs-smr demo {args.app}", _summary(result))
        _print_story(result.get("story", []))
    return result


def _gas(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from bfs_smr.adapters.evm import Anvil, install_anvil
        from bfs_smr.adapters.evm.gas import gas_report
    except ImportError:
        raise _UsageError("the EVM L1 needs the evm extra: pip install 'bfs-smr[evm]'") from None
    if args.embedded:
        return dict(gas_report(None))
    if args.rpc:
        return dict(gas_report(args.rpc))
    with Anvil(install_anvil()) as node:
        return dict(gas_report(node.url))


def _one_line(text: str) -> str:
    """``text`` on one line, its control and format characters escaped: an error's text
    may hold a peer's words (a refusal's reason), which must not drive the terminal."""
    words = " ".join(text.split()) or "failed"
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in words)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or refused operation, 1 the
    reader of the output went away, as in ``bfs-smr … | head``)."""
    try:
        args = _build_parser().parse_args(argv)
        result = _run(args)
        if args.json:
            print(json.dumps(result, sort_keys=True))
            sys.stdout.flush()
    except _Exit as exc:
        return exc.code
    except _UsageError as exc:
        print(f"bfs-smr: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except BfsSmrError as exc:
        print(f"bfs-smr: error: {_one_line(exc.reason)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bfs-smr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Nobody reads the rest: say nothing more, and keep the interpreter's final flush
        # of stdout from failing again on its way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file or directory the command was given
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bfs-smr: error: {where}{_one_line(exc.strerror or str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line (the traceback on request)
        if os.environ.get("BFS_SMR_DEBUG"):
            raise
        why = _one_line(f"{type(exc).__name__}: {exc}")
        print(f"bfs-smr: error: unexpected {why} (BFS_SMR_DEBUG=1 shows where)", file=sys.stderr)
        return 2
    return 0
