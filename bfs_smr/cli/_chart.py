"""The benchmark's chart: payments/s against pipelining window and batch size (PNG).

Needs matplotlib, the ``chart`` extra (``pip install 'bfs-smr[chart]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bfs_smr._errors import LocalError

__all__ = ["write_chart"]


def write_chart(result: dict[str, Any], path: Path | str) -> Path:
    """Draw ``bfs-smr bench``'s figures into a PNG at ``path``.

    Raises:
        LocalError: matplotlib is not installed.
    """
    try:
        import matplotlib as mpl

        mpl.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise LocalError("--chart needs matplotlib: pip install 'bfs-smr[chart]'") from None
    bound = result["crypto_bound_per_second"]
    sequential = result["sequential"]
    batched = result["batched"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for auto, marker in ((1, "o"), (64, "^")):
        runs = [sequential] + [p for p in result["pipelined"] if p["max_batch"] == auto]
        label = "one payment per update" if auto == 1 else f"automatic batching (≤ {auto})"
        left.plot(
            [p["window"] for p in runs],
            [p["payments_per_second"] for p in runs],
            marker=marker,
            label=label,
        )
    if "sequential_bound_per_second" in result:
        left.axhline(
            result["sequential_bound_per_second"],
            color="tab:purple",
            linestyle=":",
            label="sequential bound (2 fsyncs + round trip + crypto)",
        )
    left.set_xscale("log", base=2)
    left.set_xlabel("pipelining window (updates in flight)")
    left.set_ylabel("payments per second")
    right.plot(
        [b["k"] for b in batched],
        [b["payments_per_second"] for b in batched],
        marker="s",
        color="tab:green",
        label=f"two nodes, window {batched[0]['window']}",
    )
    right.set_xscale("log")
    right.set_xlabel("payments per update (k)")
    for ax in (left, right):
        ax.axhline(bound, color="tab:red", linestyle="--", label="crypto bound (2 sign + 2 verify)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("bfs-smr bench: durable stores, two processes on loopback")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
