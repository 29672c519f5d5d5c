"""One fuzz target under atheris (libFuzzer, coverage-guided), in a process of its own:
libFuzzer ends the process when its budget is spent or it finds something.

``python -m tests.fuzz.libfuzzer TARGET STATS_JSON [libFuzzer options and corpus dirs]``

Every input runs through :func:`tests.fuzz.targets.run_one` (the documented exceptions
only, and work linear in the input); STATS_JSON gets the executions so far and the worst
wall time per KiB seen on an input of at least 128 bytes, rewritten as they change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bfs_smr"]):
    from tests.fuzz.targets import TARGETS, best_us_per_kib, run_one


def main() -> None:
    name, stats_path = sys.argv[1], Path(sys.argv[2])
    target = TARGETS[name]
    stats = {"target": name, "execs": 0, "worst_us_per_kib": 0.0, "worst_size": 0}

    def write() -> None:
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(stats_path)

    def one(data: bytes) -> None:
        run_one(target, data)
        stats["execs"] += 1
        if len(data) >= 128:  # timed again without the call counter
            per_kib = best_us_per_kib(target, data, 1)
            if per_kib > stats["worst_us_per_kib"]:  # a candidate: best of 5, not a hiccup
                per_kib = best_us_per_kib(target, data, 5)
            if per_kib > stats["worst_us_per_kib"]:
                stats["worst_us_per_kib"], stats["worst_size"] = round(per_kib, 1), len(data)
                write()
        if stats["execs"] % 5_000 == 0:
            write()

    write()
    atheris.Setup([sys.argv[0], *sys.argv[3:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
