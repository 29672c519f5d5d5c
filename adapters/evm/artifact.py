"""The adjudicator's source and its committed compiled artifact.

``Adjudicator.json`` is what deployments use, so nobody needs the compiler at run time.
``python -m bfs_smr.adapters.evm`` rewrites it from ``Adjudicator.vy`` with the pinned
compiler; ``tests/test_evm_contract.py`` recompiles and fails if the two ever drift.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACT", "SOURCE", "VYPER_VERSION", "compile_artifact", "load_artifact"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "Adjudicator.vy"
ARTIFACT = HERE / "Adjudicator.json"
#: The compiler the artifact was built with (also pinned in pyproject's ``evm`` extra).
VYPER_VERSION = "0.4.3"


def compile_artifact() -> dict[str, Any]:
    """Compile ``Adjudicator.vy`` with the pinned vyper (needs the ``evm`` extra)."""
    import vyper  # type: ignore[import-untyped]

    if vyper.__version__ != VYPER_VERSION:
        raise RuntimeError(f"vyper {VYPER_VERSION} is pinned, {vyper.__version__} installed")
    source = SOURCE.read_text(encoding="utf-8")
    out = vyper.compile_code(source, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {
        "contract": "Adjudicator",
        "compiler": f"vyper {VYPER_VERSION}",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


@cache
def load_artifact() -> dict[str, Any]:
    """The committed artifact: ``abi`` and ``bytecode`` (hex)."""
    data: dict[str, Any] = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    return data


def main() -> None:
    """Rewrite the committed artifact from the source."""
    text = json.dumps(compile_artifact(), indent=1, sort_keys=True) + "\n"
    ARTIFACT.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {ARTIFACT}\n")
