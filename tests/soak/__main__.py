"""``python -m tests.soak``: one soak run of any length; exit 1 on a violation."""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .harness import Soak
from .model import Report


@contextlib.contextmanager
def anvil_node() -> Iterator[str]:
    """An anvil node mining a block a second (block time follows the clock)."""
    from bfs_smr.adapters.evm import Anvil, install_anvil

    with Anvil(install_anvil(), block_time=1) as node:
        yield node.url


def run(
    *, seed: int, seconds: float, l1: str, workdir: Path | None = None, **options: Any
) -> Report:
    """One soak run in ``workdir`` (default: a temporary directory, removed after)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        if l1 == "evm" and "anvil_url" not in options:
            options["anvil_url"] = stack.enter_context(anvil_node())
        return Soak(workdir, seed=seed, seconds=seconds, l1=l1, **options).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the faulty phase")
    length.add_argument("--seconds", type=float, help="the same, in seconds (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--l1", choices=["local", "evm"], default="local")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--window", type=int, default=None, help="challenge window, seconds")
    parser.add_argument("--max-channels", type=int, default=8, help="unsettled at once")
    parser.add_argument("--keep", type=Path, default=None, help="keep node dirs and logs here")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[name.removeprefix("act_") for name in dir(Soak) if name.startswith("act_")],
        help="leave this fault or command out (repeatable), to isolate a finding",
    )
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds or 60.0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
    report = run(
        seed=seed,
        seconds=seconds,
        l1=args.l1,
        workdir=args.keep,
        nodes=args.nodes,
        window=args.window,
        max_channels=args.max_channels,
        skip=tuple(args.skip),
    )
    print(report.summary())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
