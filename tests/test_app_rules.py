"""The twin kit (``bfs_smr.testing.check_app_rules``) on tic-tac-toe: the rules contract
apps/contracts/TicTacToe.vy agrees with apps/tictactoe.py, and the kit catches a contract
or a Python twin that is broken on purpose (docs/writing-an-app.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("web3")

from bfs_smr.adapters.evm import EvmFormat
from bfs_smr.adapters.evm.artifact import RULES_SOURCES, compile_artifact, load_rules_artifact
from bfs_smr.apps.tictactoe import TicTacToe

from bfs_smr import ChannelParams
from bfs_smr.testing import check_app_rules
from bfs_smr.testing._rules import _Rules

CELLS = [{"cell": i} for i in range(9)]
# tic-tac-toe's own malformed commands: out of range, wrong types, extra keys
HOSTILE = [{"cell": 9}, {"cell": -1}, {"cell": True}, {"cell": "4"}, {"cell": 4, "x": 0}]
SOURCE = next(s for s in RULES_SOURCES if s.stem == "TicTacToe")


def params(stake: int = 50) -> ChannelParams:
    return ChannelParams(
        l1=b"memory:test",
        participants=(b"a" * 32, b"b" * 32),
        deposits=(stake, stake),
        app="tictactoe",
        app_version=1,
    )


def test_the_tictactoe_contract_is_the_twin_of_the_python_rules() -> None:
    counts = check_app_rules(
        TicTacToe(), params(), commands=CELLS, hostile=HOSTILE, examples=6, seed=1
    )
    # every game ends within nine moves, and each state was probed
    assert counts["sequences"] == 6
    assert counts["states"] >= 6 * 6
    assert counts["commands"] >= counts["states"] * 5


def test_a_moves_generator_replaces_the_commands_list() -> None:
    """An author's generator: always the lowest free cell, so every game is the same
    draw-free line X 0, O 1, X 2, … (X wins on the diagonal 2-4-6)."""
    app = TicTacToe()

    def lowest_free(state: Any, rng: Any) -> list[tuple[int, Any]]:
        board, turn = state[0], state[1]
        return [(turn, {"cell": next(i for i in range(9) if board[i] == 0)})]

    counts = check_app_rules(app, params(7), moves=lowest_free, examples=1, probes=2)
    assert counts["states"] == 8  # seven moves, then X has won


class OutcomeForgetsTheForfeit(TicTacToe):
    """A broken Python twin: mid-game, the party to move is paid rather than forfeiting."""

    def outcome(self, state: Any) -> tuple[int, int]:
        _board, turn, s0, s1 = state
        if self.is_final(state):
            return super().outcome(state)
        return (s0 + s1, 0) if turn == 0 else (0, s0 + s1)


class AcceptsAMoveOutOfTurn(TicTacToe):
    """A broken Python twin: O may move when it is X's turn."""

    def apply(self, state: Any, command: Any, actor: int) -> Any:
        board, _turn, s0, s1 = state
        return super().apply((board, actor, s0, s1), command, actor)


@pytest.mark.parametrize(
    ("twin", "says"),
    [(OutcomeForgetsTheForfeit, "outcome"), (AcceptsAMoveOutOfTurn, "apply, command")],
)
def test_the_kit_catches_a_broken_python_twin(twin: type[TicTacToe], says: str) -> None:
    with pytest.raises(AssertionError, match=says) as caught:
        check_app_rules(twin(), params(), commands=CELLS, examples=3, probes=8)
    assert "Python" in str(caught.value) and "contract" in str(caught.value)


# Each edit breaks the contract in one way the kit must notice.
BROKEN = {
    # trailing bytes after the cell accepted: the contract must take canonical CBOR only
    "trailing_bytes": ("len(command) == 7 and ", "", "apply"),
    # any party may move: only the party whose turn it is may
    "any_actor": ('assert actor == convert(turn, uint256), "not your turn"', "pass", "apply"),
    # the mover of a forced move reported as the other party
    "force_wrong_mover": (
        "return convert(turn, uint256), abi_encode(",
        "return convert(1 - turn, uint256), abi_encode(",
        "force",
    ),
}


@pytest.fixture(scope="module")
def source() -> str:
    return SOURCE.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_kit_catches_a_broken_contract(case: str, source: str, tmp_path: Path) -> None:
    old, new, says = BROKEN[case]
    assert source.count(old) == 1
    broken = tmp_path / "TicTacToe.vy"
    broken.write_text(source.replace(old, new), encoding="utf-8")
    artifact = compile_artifact(broken)
    with pytest.raises(AssertionError, match=says):
        check_app_rules(
            TicTacToe(), params(), commands=CELLS, examples=4, probes=8, artifact=artifact
        )


def test_a_draw_split_on_an_odd_pot_goes_to_x() -> None:
    """Equal stakes make every pot even, so games cannot show the odd unit: the contract's
    outcome is checked on drawn boards with odd pots directly."""
    app, rules = TicTacToe(), _Rules(load_rules_artifact(TicTacToe()) or {})
    fmt = EvmFormat(1, bytes(20))
    draw = (1, 2, 1, 1, 2, 2, 2, 1, 1)
    for s0, s1 in ((3, 4), (0, 1), (2**200 + 1, 2**200)):
        state = (draw, 1, s0, s1)
        assert rules.call("outcome", fmt.encode_state(app, state)) == app.outcome(state)


@pytest.mark.parametrize(
    ("board", "turn"),
    [((3, 0, 0, 0, 0, 0, 0, 0, 0), 0), ((0, 0, 0, 0, 0, 0, 0, 0, 255), 0), ((0,) * 9, 2)],
)
def test_states_outside_the_apps_domain_revert(board: Any, turn: int) -> None:
    """A board cell above 2 or a turn above 1 is a valid ABI encoding but no state of the
    app: every function refuses it."""
    rules = _Rules(load_rules_artifact(TicTacToe()) or {})
    fmt = EvmFormat(1, bytes(20))
    data = fmt.encode_state(TicTacToe(), (board, turn, 5, 5))
    cell = bytes.fromhex("a16463656c6c04")
    for name, args in (
        ("to_move", (data,)),
        ("is_final", (data,)),
        ("outcome", (data,)),
        ("apply", (data, cell, turn)),
        ("force", (data, cell)),
    ):
        assert rules.call(name, *args)[0] == "reject", name


_VYPER_EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```vyper\n(.*?)```", re.DOTALL)


def test_the_tutorials_vyper_excerpts_are_verbatim() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    excerpts = _VYPER_EXCERPT.findall((docs / "writing-an-app.md").read_text(encoding="utf-8"))
    assert len(excerpts) >= 2
    for source, code in excerpts:
        assert code in (docs.parent / source).read_text(encoding="utf-8"), code
