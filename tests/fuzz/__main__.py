"""Fuzz every untrusted-input surface: ``python -m tests.fuzz [TARGET ...] [--seconds N]``.

With atheris installed (the test extra installs it) each target runs coverage-guided under
libFuzzer in a process of its own, from a seed corpus of genuine inputs; without it,
Hypothesis generates the inputs. Either way every input must be accepted or refused with
the documented exception, at a cost in Python calls linear in its size
(:mod:`tests.fuzz.targets`). Prints one line per target (executions, seconds, the worst
wall time per KiB seen) and exits non-zero on a finding, whose input libFuzzer saves.
CI runs a short budget (tests/test_fuzz.py); run it long by hand, e.g. ``--seconds 600``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.seeds import write_seeds
from tests.fuzz.targets import TARGETS, best_us_per_kib, run_one


def fuzz_with_atheris(name: str, seconds: float, max_len: int, workdir: Path) -> dict:
    corpus = workdir / f"corpus-{name}"
    write_seeds(name, corpus)
    stats = workdir / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "tests.fuzz.libfuzzer",
        name,
        str(stats),
        f"-max_total_time={int(seconds)}",
        f"-max_len={max_len}",
        f"-artifact_prefix={workdir}/{name}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path[1:]])}
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    result = json.loads(stats.read_text()) if stats.exists() else {"target": name}
    result.update(engine="atheris", seconds=round(time.monotonic() - start, 1))
    result["returncode"] = done.returncode
    if done.returncode != 0:
        result["finding"] = done.stderr[-4000:]
    return result


def fuzz_with_hypothesis(name: str, seconds: float, max_len: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    target = TARGETS[name]
    stats = {"target": name, "engine": "hypothesis", "execs": 0, "worst_us_per_kib": 0.0}
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.binary(max_size=max_len))
    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise _Done
        run_one(target, data)
        stats["execs"] += 1
        if len(data) >= 128:
            per_kib = best_us_per_kib(target, data, 1)
            if per_kib > stats["worst_us_per_kib"]:
                per_kib = best_us_per_kib(target, data, 5)
            stats["worst_us_per_kib"] = round(max(stats["worst_us_per_kib"], per_kib), 1)

    start = time.monotonic()
    with contextlib.suppress(_Done):
        one()
    stats["seconds"] = round(time.monotonic() - start, 1)
    stats["returncode"] = 0
    return stats


# Under atheris the code runs with coverage hooks: its times overstate the real cost
# (python -m tests.fuzz.decode_cost measures that).
INSTRUMENTED = " (instrumented)"


class _Done(Exception):
    pass


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    p.add_argument(
        "targets",
        nargs="*",
        choices=[[], *TARGETS],
        metavar="TARGET",
        help=f"of: {', '.join(TARGETS)} (default: all)",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    p.add_argument("--max-len", type=int, default=4096, help="longest input (default 4096)")
    p.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = p.parse_args(argv)
    names = args.targets or list(TARGETS)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "hypothesis"
    results = []
    with tempfile.TemporaryDirectory(prefix="bfs-smr-fuzz-") as tmp:
        for name in names:
            if engine == "atheris":
                result = fuzz_with_atheris(name, args.seconds, args.max_len, Path(tmp))
            else:
                result = fuzz_with_hypothesis(name, args.seconds, args.max_len)
            results.append(result)
            print(
                f"{name:11s} {result['engine']:10s} {result.get('execs', 0):>9,} execs "
                f"in {result['seconds']:>6} s   worst {result.get('worst_us_per_kib', 0):>8} "
                f"µs/KiB{INSTRUMENTED if result['engine'] == 'atheris' else ''}   "
                f"{'FINDING' if result['returncode'] else 'ok'}",
                flush=True,
            )
            if result["returncode"]:
                print(result.get("finding", ""), file=sys.stderr)
    if args.json:
        print(json.dumps({"targets": results}))
    return 1 if any(r["returncode"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
