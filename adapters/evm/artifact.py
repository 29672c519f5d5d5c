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
from importlib import resources
from pathlib import Path
from typing import Any

from bfs_smr import LocalError, StateMachine

__all__ = [
    "ARTIFACT",
    "SOURCE",
    "VYPER_VERSION",
    "compile_artifact",
    "load_artifact",
    "load_rules_artifact",
]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "Adjudicator.vy"
ARTIFACT = HERE / "Adjudicator.json"
#: The compiler the artifact was built with (also pinned in pyproject's ``evm`` extra).
VYPER_VERSION = "0.4.3"


#: The bundled apps' rules contracts, rebuilt with the adjudicator.
RULES_SOURCES = (HERE.parent.parent / "apps" / "contracts" / "TicTacToe.vy",)


def compile_artifact(source_path: Path = SOURCE) -> dict[str, Any]:
    """Compile a contract (default ``Adjudicator.vy``) with the pinned vyper (needs the
    ``evm`` extra)."""
    import vyper  # type: ignore[import-untyped]

    if vyper.__version__ != VYPER_VERSION:
        raise RuntimeError(f"vyper {VYPER_VERSION} is pinned, {vyper.__version__} installed")
    source = source_path.read_text(encoding="utf-8")
    out = vyper.compile_code(source, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {
        "contract": source_path.stem,
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


def load_rules_artifact(app: StateMachine[Any]) -> dict[str, Any] | None:
    """The compiled rules contract of ``app`` on the EVM (``app.l1_rules["evm"]``, a
    ``"package:file"`` resource), or ``None`` if the app has none.

    Raises:
        LocalError: the app names a resource that cannot be read as an artifact.
    """
    spec = getattr(app, "l1_rules", {}).get("evm")
    if spec is None:
        return None
    package, _, name = spec.partition(":")
    try:
        data: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text())
    except (ImportError, OSError, ValueError) as exc:
        raise LocalError(f"{app.app_id}: cannot read its EVM rules {spec!r}: {exc}") from None
    if not isinstance(data, dict) or "bytecode" not in data or "abi" not in data:
        raise LocalError(f"{app.app_id}: its EVM rules {spec!r} are not a compiled artifact")
    return data


def main() -> None:
    """Rewrite the committed artifacts (the adjudicator's, the bundled rules') from their
    sources."""
    for source, target in (
        (SOURCE, ARTIFACT),
        *((s, s.with_suffix(".json")) for s in RULES_SOURCES),
    ):
        text = json.dumps(compile_artifact(source), indent=1, sort_keys=True) + "\n"
        target.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {target}\n")
