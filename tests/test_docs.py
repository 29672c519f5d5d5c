"""The docs must not drift from the code.

* docs/protocol.md carries the transition table and state diagrams generated from
  ``bfs_smr.TRANSITIONS`` by docs/gen_transition_table.py; the block must be current.
* The phase changes the table declares (each transition's targets) all happen in real
  channels; the channel itself refuses any other at dispatch.
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
from bfs_smr.apps.counter import Counter, CounterState

import bfs_smr
from bfs_smr import (
    TRANSITIONS,
    Channel,
    Input,
    PersistUpdate,
    Phase,
    Role,
    SendMessage,
    StateMachine,
)
from bfs_smr._messages import Signed, encode_message
from bfs_smr.runtime import LocalPair, memory_pair
from bfs_smr.runtime._local import Party

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
    for (role, phase, what), transition in TRANSITIONS.items():
        assert any(
            f"| {role.value} | {phase.value} |" in row and f"`{transition.name}`" in row
            for row in rows
        ), (role, phase, what)


def test_replace_block_round_trips_and_refuses_missing_markers() -> None:
    doc = f"intro\n{gen.START}\nold\n{gen.END}\noutro\n"
    assert gen.replace_block(doc, "new\n") == f"intro\n{gen.START}\nnew\n{gen.END}\noutro\n"
    with pytest.raises(ValueError):
        gen.replace_block("no markers here", "new\n")


def test_every_transition_names_a_function_and_its_phases() -> None:
    for key, transition in TRANSITIONS.items():
        assert callable(transition.handler), key
        assert transition.targets and all(isinstance(p, Phase) for p in transition.targets)
        assert gen.phases_after(key) == tuple(p for p in Phase if p in transition.targets)


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


class _TurnCounter(Counter):
    """A counter whose turns alternate, so that either party can force a move."""

    name = "turn-counter"

    def to_move(self, state: CounterState) -> int | None:
        return state[0] % 2


def _pair(app: str | StateMachine[Any], deposits: tuple[int, int]) -> LocalPair:
    _, pair = memory_pair(app, deposits)
    pair.open()
    return pair


def _restore(pair: LocalPair, party: Party, backup: dict[str, Any] | None = None) -> None:
    """Replace ``party``'s channel: by an empty one (it lost its store), or by one
    restored from ``backup`` (an older copy of its store)."""
    party.channel = Channel.restore(
        pair.params,
        pair.app,
        party.l1.format,
        party.signer,
        **(backup or {"committed": None, "state": None}),
    )


def _backup(party: Party) -> dict[str, Any]:
    chan = party.chan
    return {
        "committed": chan.committed,
        "state": chan.state,
        "next_ref": chan.next_ref,
        "last_peer_ref": chan.last_peer_ref,
    }


def _withhold_answers(pair: LocalPair) -> None:
    """Bob takes what Alice sent and answers, but his answers never reach her."""
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()


def _run_resync_scenarios() -> None:
    # A party that lost its store restores from the peer: opening to open, or straight
    # to closed when the channel is over.
    for close in (False, True):
        for party in ("alice", "bob"):
            p = _pair("payments", (100, 0))
            p.alice.chan.issue({"pay": 5})
            if close:
                p.alice.chan.close()
            p.pump()
            _restore(p, getattr(p, party))
            p.resync()
            assert getattr(p, party).chan.phase is (Phase.CLOSED if close else Phase.OPEN)
    # A party restored from an older backup learns of the final update: from open,
    # and (the follower, whose close request was in that backup) from closing.
    for party in ("alice", "bob"):
        p = _pair("payments", (100, 0))
        backup = _backup(getattr(p, party))
        p.bob.chan.close()
        p.pump()
        _restore(p, getattr(p, party), backup)
        p.resync()
        assert getattr(p, party).chan.phase is Phase.CLOSED
    p = _pair("payments", (100, 0))
    ref = p.bob.chan.next_ref
    p.bob.chan.close()
    backup = {**_backup(p.bob), "requests": [(ref, None, True)]}
    p.pump()
    _restore(p, p.bob, backup)
    assert p.bob.chan.phase is Phase.CLOSING
    p.resync()
    assert p.bob.chan.phase is Phase.CLOSED
    # The sequencer closing, its final update counter-signed but the answer lost.
    p = _pair("payments", (100, 0))
    p.alice.chan.close()
    _withhold_answers(p)
    p.resync()
    assert p.alice.chan.phase is Phase.CLOSED
    # The sequencer forced its oldest proposal while a final update was in flight behind
    # it; the follower had signed both: a late answer or a resync closes the channel.
    for resync in (False, True):
        p = _pair("payments", (100, 0))
        p.alice.chan.issue({"pay": 1})
        p.alice.chan.close()
        p.drain(p.alice)
        while p.bob.inbox:
            p.bob.chan.receive(p.bob.inbox.popleft())
        out = p.bob.chan.effects()  # Bob signed both; Alice gets neither answer yet
        answers = [e.data for e in out if isinstance(e, SendMessage)]
        signed = [e for e in out if isinstance(e, PersistUpdate) and not e.committed]
        p.alice.chan.force_move()
        assert p.alice.chan.phase is Phase.DISPUTE and len(signed) == 2
        if resync:  # Bob re-sends what he signed (SIGNED), as after a reconnect
            for e in signed:
                again = Signed(
                    channel_id=p.params.channel_id,
                    update=e.update.update,
                    signature=e.update.signatures[1],
                    tag=e.tag,
                )
                p.alice.chan.receive(encode_message(again))
        else:
            for data in answers:
                p.alice.chan.receive(data)
        assert p.alice.chan.phase is Phase.CLOSED


def _run_crash_scenarios() -> None:
    """The follower signs first: a sequencer that lost its proposals completes them
    from the follower's SIGNED; a follower in a dispute completes what it signed."""
    # The sequencer lost everything after proposing the opening update Bob signed.
    _, p = memory_pair("payments", (100, 0))
    p.alice.chan.start()
    _withhold_answers(p)
    _restore(p, p.alice)
    p.resync()
    assert p.alice.chan.phase is Phase.OPEN
    # The sequencer restarted after proposing the final update Bob signed.
    p = _pair("payments", (100, 0))
    backup = _backup(p.alice)
    p.alice.chan.close()
    _withhold_answers(p)
    _restore(p, p.alice, backup)
    p.resync()
    assert p.alice.chan.phase is Phase.CLOSED
    # Bob forced his own payment, which he had signed with the final update behind it;
    # Alice's COMMITs then complete both.
    p = _pair("payments", (100, 50))
    p.bob.chan.issue({"pay": 1})
    p.drain(p.bob)
    p.alice.chan.receive(p.alice.inbox.popleft())
    p.alice.chan.close()
    p.drain(p.alice)
    while p.bob.inbox:
        p.bob.chan.receive(p.bob.inbox.popleft())
    answers = [e.data for e in p.bob.chan.effects() if isinstance(e, SendMessage)]
    p.bob.chan.force_move()
    assert p.bob.chan.phase is Phase.DISPUTE
    for data in answers:
        p.alice.chan.receive(data)
    for e in p.alice.chan.effects():
        if isinstance(e, SendMessage):
            p.bob.chan.receive(e.data)
    assert p.bob.chan.phase is Phase.CLOSED
    # The sequencer, restored from an old backup, asks to close; the follower's log
    # (served on resync) already ends in a final update.
    p = _pair("payments", (100, 0))
    backup = _backup(p.alice)
    p.alice.chan.issue({"pay": 1})
    p.alice.chan.close()
    p.pump()
    _restore(p, p.alice, backup)
    p.alice.chan.close()
    assert p.alice.chan.phase is Phase.CLOSING
    p.resync()
    assert p.alice.chan.phase is Phase.CLOSED
    # The sequencer, restored from an old backup, forced a move; the follower's log
    # (served on resync) ends in a final update.
    p = _pair("tictactoe", (10, 10))
    backup = _backup(p.alice)
    for who, cell in ((p.alice, 0), (p.bob, 3), (p.alice, 1), (p.bob, 4), (p.alice, 2)):
        who.chan.issue({"cell": cell})
        p.pump()
    p.alice.chan.close()
    p.pump()
    _restore(p, p.alice, backup)
    p.alice.chan.force_move({"cell": 8})
    assert p.alice.chan.phase is Phase.DISPUTE
    p.resync()
    assert p.alice.chan.phase is Phase.CLOSED


def _run_forced_move_scenarios() -> None:
    # Each party adopts the other's forced move, from open and from closing.
    for close_first in (False, True):
        p = _pair(_TurnCounter(), (10, 10))
        p.silenced.add("bob")
        p.alice.chan.issue({"inc": 1})
        p.pump()
        forced = p.alice.chan.force_move()
        if close_first:
            p.bob.chan.close()  # not delivered: the follower stays closing
        p.bob.chan.adopt_forced_move(forced)
        assert p.bob.chan.phase is Phase.DISPUTE
        p = _pair(_TurnCounter(), (10, 10))
        p.alice.chan.issue({"inc": 1})
        p.pump()
        forced = p.bob.chan.force_move({"inc": 1})
        if close_first:
            p.alice.chan.close()  # proposed, not delivered: the sequencer stays closing
        p.alice.chan.adopt_forced_move(forced)
        assert p.alice.chan.phase is Phase.DISPUTE
    # The follower, restored from an older backup, forced a move at a seq it had signed
    # before; the peer's log holds the final update there, which it adopts.
    p = _pair(_TurnCounter(), (10, 10))
    p.alice.chan.issue({"inc": 1})
    p.pump()
    backup = _backup(p.bob)
    p.alice.chan.close()
    p.pump()
    _restore(p, p.bob, backup)
    p.bob.chan.force_move({"inc": 1})
    p.resync()
    assert p.bob.chan.phase is Phase.CLOSED


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
    _run_resync_scenarios()
    _run_crash_scenarios()
    _run_forced_move_scenarios()
    for key, after in observed:
        assert after in gen.phases_after(key), f"{key} went to {after}, not documented"
    changes = {(key, after) for key, after in observed if after is not key[1]}
    documented = {
        (key, after)
        for key, transition in TRANSITIONS.items()
        for after in transition.targets
        if after is not key[1]
    }
    assert changes == documented, sorted(documented - changes, key=str)


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
