"""Worst-case decode cost: ``python -m tests.fuzz.decode_cost [--json]``.

Times the hardened decoder on the input shapes that cost it most per byte (an item per
byte or two: empty arrays and maps, small integers, one-letter text, nesting, integer and
text keys) at 1 KiB, and the most work one message can ask for: a node frame at its item
budget (MAX_NODE_ITEMS) and a channel message at MAX_ITEMS. Best of five runs each, so
the figures are the decoder's, not the machine's other load. docs/nodes.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bfs_smr import decode, encode
from bfs_smr._codec import MAX_ITEMS
from bfs_smr.runtime.node._nodemsg import MAX_NODE_ITEMS, parse_node_message

SHAPES: dict[str, Callable[[int], Any]] = {
    # each builds a value of about n items
    "empty arrays": lambda n: [[]] * (n // 2),
    "empty maps": lambda n: [{}] * (n // 2),
    "small integers": lambda n: [0] * n,
    "one-letter text": lambda n: ["a"] * n,
    "nested arrays": lambda n: [[[[[0]]]]] * (n // 9),
    "integer keys": lambda n: {i: 0 for i in range(n // 2)},
    "text keys": lambda n: {f"{i:x}": 0 for i in range(n // 2)},
    "payments": lambda n: [{"pay": 1}] * (n // 3),
}


def best_of(data: bytes, runs: int = 5, **limits: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        decode(data, **limits)
        best = min(best, time.perf_counter() - start)
    return best


def measure() -> dict[str, Any]:
    per_kib = {}
    for name, make in SHAPES.items():
        n = 1024
        data = encode(make(n))
        while len(data) > 1024:  # shrink to at most 1 KiB
            n = n * 1000 // 1024
            data = encode(make(n))
        per_kib[name] = best_of(data, runs=200) * 1e6 / (len(data) / 1024)
    worst_shape = max(per_kib, key=per_kib.__getitem__)
    # The most one message may cost: its whole item budget spent on the worst shape.
    node = encode(["open", SHAPES[worst_shape](MAX_NODE_ITEMS - 8)])
    parse_node_message(node)  # within the node frame's limits
    message = encode(SHAPES[worst_shape](MAX_ITEMS - 8))
    return {
        "us_per_kib": {k: round(v, 1) for k, v in per_kib.items()},
        "worst_shape": worst_shape,
        "worst_us_per_kib": round(per_kib[worst_shape], 1),
        "node_frame_worst_ms": round(best_of(node, max_items=MAX_NODE_ITEMS) * 1e3, 2),
        "node_frame_bytes": len(node),
        "message_worst_ms": round(best_of(message) * 1e3, 1),
        "message_bytes": len(message),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.decode_cost")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure()
    for name, us in r["us_per_kib"].items():
        print(f"{name:16s} {us:8.1f} µs per KiB")
    print(f"worst: {r['worst_shape']}, {r['worst_us_per_kib']} µs per KiB")
    print(
        f"a node frame at its item budget ({r['node_frame_bytes']:,} bytes): "
        f"{r['node_frame_worst_ms']} ms"
    )
    print(
        f"a channel message at MAX_ITEMS ({r['message_bytes']:,} bytes): {r['message_worst_ms']} ms"
    )
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
