"""``bfs-smr tower init|run|bench``: a watchtower for nodes that go offline
(docs/watchtower.md), and its benchmark (docs/performance.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from bfs_smr.cli._bench_tower import bench_tower, print_tower_bench
from bfs_smr.cli._node_commands import L1_HELP, evm_address, positive
from bfs_smr.runtime._logging import configure_logging
from bfs_smr.runtime.store._datadir import parse_hex_id
from bfs_smr.runtime.tower import SLOT_SIZE, Tower, TowerConfig, TowerDir
from bfs_smr.runtime.tower._tower import MAX_ENTRIES, MAX_ENTRIES_PER_CLIENT

__all__ = ["add_tower_commands", "run_tower_command"]


def add_tower_commands(sub: Any) -> None:
    tower = sub.add_parser("tower", help="run a watchtower that protects offline nodes")
    tsub = tower.add_subparsers(dest="tower_command", required=True, parser_class=type(tower))
    ini = tsub.add_parser("init", help="create a tower's data directory (its identity)")
    ini.add_argument("--data-dir", required=True, metavar="DIR")
    ini.add_argument("--json", action="store_true")
    run = tsub.add_parser("run", help="run a tower in the foreground (Ctrl-C stops it)")
    run.add_argument("--data-dir", required=True, metavar="DIR")
    run.add_argument("--listen", required=True, metavar="HOST:PORT")
    run.add_argument("--l1", required=True, metavar="SPEC", help=L1_HELP)
    run.add_argument(
        "--allow-node",
        action="append",
        default=None,
        metavar="NODE_ID",
        help="keep entries only for these nodes (repeatable; default: any node)",
    )
    run.add_argument(
        "--slot",
        type=positive,
        default=SLOT_SIZE,
        metavar="BYTES",
        help="the plaintext size of every entry (default %(default)s): a node's update "
        "larger than it waits for a smaller one",
    )
    run.add_argument(
        "--max-entries-per-client",
        type=positive,
        default=MAX_ENTRIES_PER_CLIENT,
        metavar="N",
        help="channels one node may keep here (default %(default)s)",
    )
    run.add_argument(
        "--max-entries",
        type=positive,
        default=MAX_ENTRIES,
        metavar="N",
        help="entries all nodes together may keep here (default %(default)s)",
    )
    run.add_argument("--log-json", action="store_true", help="log one JSON object a line")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--json", action="store_true")
    bench = tsub.add_parser(
        "bench",
        help="measure one tower process serving many nodes' channels on a local L1: "
        "memory and disk per channel, puts/s, an entry's bytes after 10 and many updates, "
        "refute latency",
    )
    bench.add_argument(
        "--channels", type=positive, default=10_000, metavar="N", help="default %(default)s"
    )
    bench.add_argument(
        "--nodes",
        type=positive,
        default=10,
        metavar="K",
        help="node identities dialling the tower, each with its share of the channels "
        "(default %(default)s)",
    )
    bench.add_argument(
        "--updates",
        type=positive,
        default=100_000,
        metavar="U",
        help="real updates of the watched channel, whose entry is read after 10 and after "
        "U (default %(default)s)",
    )
    bench.add_argument(
        "--window",
        type=positive,
        default=5,
        metavar="S",
        help="the local L1's challenge window in seconds (default %(default)s)",
    )
    bench.add_argument("--json", action="store_true")


def run_tower_command(args: argparse.Namespace) -> dict[str, Any]:
    if args.tower_command == "init":
        tdir = TowerDir(args.data_dir)
        result = {"tower_id": tdir.init().hex()}
        address = evm_address(tdir.l1_key())
        if address is not None:
            result["evm_address"] = address  # what pays the tower's gas on the EVM
        return result
    if args.tower_command == "bench":
        configure_logging(json=False, level="warning")  # (the bench's own links: quiet)
        bench = bench_tower(args.channels, args.nodes, updates=args.updates, window=args.window)
        if not args.json:
            print_tower_bench(bench)
        return bench
    configure_logging(json=args.log_json, level=args.log_level)
    allow = None if args.allow_node is None else frozenset(map(parse_hex_id, args.allow_node))
    config = TowerConfig(
        listen=args.listen,
        l1=args.l1,
        allow=allow,
        slot=args.slot,
        max_entries_per_client=args.max_entries_per_client,
        max_entries=args.max_entries,
    )
    tower = Tower(args.data_dir, config)

    def ready(t: Tower) -> None:
        info = {
            "tower_id": t.tower_id.hex(),
            "listen": f"{config.listen_address[0]}:{t.port}",
            "ready": True,
        }
        print(
            json.dumps(info)
            if args.json
            else f"tower {info['tower_id']} listening on {info['listen']}",
            flush=True,
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, tower.stop)
        await tower.run(ready)

    asyncio.run(main())
    return {"tower_id": tower.tower_id.hex(), "stopped": True}
