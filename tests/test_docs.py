"""The docs must not drift from the code.

* docs/protocol.md carries the transition table and state diagrams generated from
  ``bfs_smr.TRANSITIONS`` by docs/gen_transition_table.py; the block must be current.
* The generator's hand-kept list of phase changes (``LEAVES``) is checked against the
  table and against the phases real channels go through.
* Code excerpts in docs/writing-an-app.md must be verbatim slices of docs/examples/bet.py.
* Every ``bfs_smr.<name>`` the docs mention must exist.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import bfs_smr
from bfs_smr import TRANSITIONS, Channel, Input, Phase, Role
from bfs_smr.runtime import LocalPair, memory_pair

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC_FILES = ["protocol.md", "writing-an-app.md", "l1-adapters.md"]


def _load(path: Path, name: str) -> ModuleType:
    if name in sys.modules:  # one module object per file: registrations must not diverge
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load(DOCS / "gen_transition_table.py", "bfs_smr_docs_gen_transition_table")

Key = tuple[Role, Phase, Input]


# -- the generated block ----------------------------------------------------------------


def test_protocol_md_transition_block_is_current() -> None:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    assert text.count(gen.START) == 1 and text.count(gen.END) == 1
    _, _, rest = text.partition(gen.START + "\n")
    current, _, _ = rest.partition(gen.END)
    assert current == gen.render(), (
        "docs/protocol.md is out of date: run `python docs/gen_transition_table.py --write`"
    )


def test_rendered_table_has_one_row_per_transition() -> None:
    rows = [line for line in gen.render().splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(TRANSITIONS)
    for (role, phase, what), handler in TRANSITIONS.items():
        assert any(
            f"| {role.value} | {phase.value} |" in row and f"`{handler}`" in row for row in rows
        ), (role, phase, what)


def test_replace_block_round_trips_and_refuses_missing_markers() -> None:
    doc = f"intro\n{gen.START}\nold\n{gen.END}\noutro\n"
    assert gen.replace_block(doc, "new\n") == f"intro\n{gen.START}\nnew\n{gen.END}\noutro\n"
    with pytest.raises(ValueError):
        gen.replace_block("no markers here", "new\n")


def test_every_handler_exists() -> None:
    for handler in TRANSITIONS.values():
        assert callable(getattr(Channel, handler)), handler


def test_leaves_only_names_real_transitions() -> None:
    for key, after in gen.LEAVES.items():
        assert key in TRANSITIONS, key
        assert after and all(isinstance(p, Phase) for p in after)
        assert after != (key[1],), f"{key} only stays; drop it from LEAVES"


# -- the phase changes, observed in real runs ----------------------------------------------


@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[tuple[Key, Phase]]]:
    """Record (role, phase before, input) -> phase after for every handled input."""
    seen: set[tuple[Key, Phase]] = set()
    original: Callable[..., Any] = Channel._dispatch

    def spy(self: Channel, what: Input, arg: Any = None) -> Any:
        before = self.phase
        result = original(self, what, arg)
        seen.add(((self.role, before, what), self.phase))
        return result

    monkeypatch.setattr(Channel, "_dispatch", spy)
    yield seen


def _pair(app: str, deposits: tuple[int, int]) -> LocalPair:
    _, pair = memory_pair(app, deposits)
    pair.open()
    return pair


def _run_scenarios() -> None:
    # Follower asks to close; the sequencer agrees; the final update closes both.
    p = _pair("payments", (100, 0))
    p.alice.chan.issue({"pay": 5})
    p.bob.chan.close()
    p.pump()
    assert p.alice.chan.phase is p.bob.chan.phase is Phase.CLOSED
    # Sequencer closes; the follower goes from open straight to closed.
    p = _pair("payments", (100, 0))
    p.alice.chan.close()
    p.pump()
    assert p.bob.final is not None
    # Mid-game a close request is denied; the follower is open again.
    p = _pair("tictactoe", (10, 10))
    p.bob.chan.close()
    p.pump()
    assert p.bob.chan.phase is Phase.OPEN and len(p.bob.failed) == 1
    # Follower force-moves on its turn, from open and from closing.
    for close_first in (False, True):
        p = _pair("tictactoe", (10, 10))
        p.alice.chan.issue({"cell": 0})
        p.pump()
        if close_first:
            p.bob.chan.close()  # not delivered: the follower stays closing
        p.bob.chan.force_move({"cell": 4})
        assert p.bob.chan.phase is Phase.DISPUTE
    # Sequencer force-moves its unanswered proposal, from open and from closing.
    for close_first in (False, True):
        p = _pair("payments", (100, 0))
        p.silenced.add("bob")
        p.alice.chan.issue({"pay": 1})
        p.pump()
        if close_first:
            p.alice.chan.close()
        signed = p.alice.chan.force_move()
        assert signed.update.commands and p.alice.chan.phase is Phase.DISPUTE


def test_documented_phase_changes_match_real_runs(observed: set[tuple[Key, Phase]]) -> None:
    _run_scenarios()
    for key, after in observed:
        assert after in gen.phases_after(key), f"{key} went to {after}, not documented"
    changes = {(key, after) for key, after in observed if after is not key[1]}
    documented = {(key, a) for key, afters in gen.LEAVES.items() for a in afters if a is not key[1]}
    assert changes == documented


# -- excerpts and names ------------------------------------------------------------------

_EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def test_tutorial_excerpts_are_verbatim() -> None:
    text = (DOCS / "writing-an-app.md").read_text(encoding="utf-8")
    excerpts = _EXCERPT.findall(text)
    assert len(excerpts) >= 4
    for source, code in excerpts:
        original = (DOCS.parent / source).read_text(encoding="utf-8")
        assert code in original, f"excerpt of {source} drifted:\n{code}"


@pytest.mark.parametrize("doc", DOC_FILES)
def test_docs_name_only_existing_api(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    for name in set(re.findall(r"\bbfs_smr\.([A-Za-z_]\w*)", text)):
        if name in ("apps", "l1"):  # the entry-point groups, not modules
            continue
        exists = hasattr(bfs_smr, name) or importlib.util.find_spec(f"bfs_smr.{name}")
        assert exists, f"{doc} mentions bfs_smr.{name}, which does not exist"


def test_tutorial_channel_sample_runs() -> None:
    # The last two python blocks of the tutorial: registration, then a whole channel run.
    text = (DOCS / "writing-an-app.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    # Same module name as tests/test_example_app.py, so both register the same class.
    bet = _load(DOCS / "examples" / "bet.py", "bfs_smr_example_bet")
    namespace: dict[str, Any] = {"Bet": bet.Bet}
    exec(blocks[-2], namespace)
    exec(blocks[-1], namespace)
    assert namespace["payouts"] == (130, 70)
