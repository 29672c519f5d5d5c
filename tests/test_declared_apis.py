"""Pin the declared APIs of bfs_smr.runtime and bfs_smr.testing (bfs_smr's own is pinned in
test_public_api.py): adding or removing a name is a deliberate, reviewed change."""

import ast
import subprocess
import sys
from pathlib import Path

import bfs_smr.runtime
import bfs_smr.testing

RUNTIME = {
    "LocalPair", "Party", "available_apps", "evm_pair", "load_app", "memory_pair",
    "register_app",
}  # fmt: skip

TESTING = {
    "EvmL1Harness", "HOSTILE_COMMANDS", "L1Harness", "L1RuleBroken", "L1_RULES",
    "LocalL1Harness", "LocalPair", "MemoryL1Harness", "Party", "RULES_ABI", "check_app",
    "check_app_rules", "check_l1_adapter", "memory_pair",
}  # fmt: skip


def test_runtime_names_are_pinned():
    assert set(bfs_smr.runtime.__all__) == RUNTIME
    for name in RUNTIME:
        assert hasattr(bfs_smr.runtime, name)


def test_testing_names_are_pinned():
    assert set(bfs_smr.testing.__all__) == TESTING
    for name in TESTING:
        assert hasattr(bfs_smr.testing, name)


def test_testing_reexports_the_runtimes_pair_rather_than_a_copy():
    assert bfs_smr.testing.LocalPair is bfs_smr.runtime.LocalPair
    assert bfs_smr.testing.memory_pair is bfs_smr.runtime.memory_pair


def test_the_l1_rules_have_stable_names():
    assert list(bfs_smr.testing.L1_RULES) == [
        "L1-OPEN-FRESH-ID",
        "L1-OPEN-LOCKS",
        "L1-OPEN-COVERED",
        "L1-REJECT-L1ERROR",
        "L1-UPDATE-VALID",
        "L1-COOP-CLOSE",
        "L1-CLOSE-WINDOW",
        "L1-CLOSE-REVEALS",
        "L1-REFUTE-NEWER",
        "L1-REFUTE-KEEPS-DEADLINE",
        "L1-FORCE-MOVE",
        "L1-FORCE-MOVE-CHECKED",
        "L1-SETTLE-ONCE",
        "L1-NO-DOUBLE-PAY",
        "L1-NO-STUCK-VALUE",
    ]


def test_importing_the_runtime_or_the_kits_loads_neither_the_daemon_nor_web3():
    code = (
        "import sys, bfs_smr.runtime, bfs_smr.testing; "
        "print(sorted(m for m in sys.modules if m.startswith(('bfs_smr.runtime.node', "
        "'bfs_smr.runtime.transport', 'web3', 'bfs_smr.cli'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_nothing_but_tests_imports_the_kits():
    """bfs_smr.testing sits above the runtime and the adapters: none of them, nor the
    core, the apps or the command line, may import it."""
    root = Path(bfs_smr.runtime.__file__).parents[2]
    sources = [*(root / "bfs_smr").rglob("*.py"), *(root / "apps").rglob("*.py")]
    sources += (root / "adapters").rglob("*.py")
    found = []
    for path in sources:
        if "testing" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "bfs_smr.testing" or n.startswith("bfs_smr.testing.") for n in names):
                found.append(str(path.relative_to(root)))
    assert len(sources) > 30
    assert found == []
