"""Tic-tac-toe with a stake: winner takes the pot, a draw splits it.

Participant 0 plays X and moves first. A game in progress that is closed on L1 after its
window pays the pot to the player who is *not* to move: the player to move had the window
to answer (by a force move on L1) and did not, so stopping answering loses.
"""

from __future__ import annotations

from typing import Any

from bfs_smr import ChannelParams, CommandRejected, StateMachine, reject

__all__ = ["TicTacToe"]

# State: (board of 9 cells: 0 empty / 1 X (participant 0) / 2 O (participant 1),
#         next to move (0 or 1), stake of participant 0, stake of participant 1)
Board = tuple[int, int, int, int, int, int, int, int, int]
GameState = tuple[Board, int, int, int]

_LINES = (
    (0, 1, 2), (3, 4, 5), (6, 7, 8),
    (0, 3, 6), (1, 4, 7), (2, 5, 8),
    (0, 4, 8), (2, 4, 6),
)  # fmt: skip


_MARKS = ("", "X", "O")


def winner(board: Board) -> int | None:
    """0 or 1 if that participant has three in a row, else ``None``."""
    for a, b, c in _LINES:
        if board[a] != 0 and board[a] == board[b] == board[c]:
            return board[a] - 1
    return None


class TicTacToe(StateMachine[GameState]):
    """Commands: ``{"cell": i}`` with ``0 <= i <= 8``, on the actor's turn."""

    name = "tictactoe"
    version = 1
    # On the EVM the rules contract (apps/contracts/TicTacToe.vy) reads this encoding.
    state_abi = "(uint8[9],uint8,uint256,uint256)"
    l1_rules = {"evm": "bfs_smr.apps:contracts/TicTacToe.json"}  # noqa: RUF012 - read only

    def initial_state(self, params: ChannelParams) -> GameState:
        if params.deposits[0] != params.deposits[1]:
            raise CommandRejected("both players stake the same amount")
        empty: Board = (0, 0, 0, 0, 0, 0, 0, 0, 0)
        return (empty, 0, params.deposits[0], params.deposits[1])

    def apply(self, state: GameState, command: Any, actor: int) -> GameState:
        board, turn, s0, s1 = state
        if self.is_final(state):
            raise reject("the game is over")
        if actor != turn:
            raise reject("not your turn")
        if type(command) is not dict or command.keys() != {"cell"}:
            raise reject('a move is {"cell": 0..8}')
        cell = command["cell"]
        if type(cell) is not int or not 0 <= cell <= 8:
            raise reject("cell must be an integer from 0 to 8")
        if board[cell] != 0:
            raise reject(f"cell {cell} is taken")
        cells = list(board)
        cells[cell] = actor + 1
        new_board: Board = tuple(cells)  # type: ignore[assignment]
        return (new_board, 1 - turn, s0, s1)

    def is_final(self, state: GameState) -> bool:
        board = state[0]
        return winner(board) is not None or all(board)

    def may_close(self, state: GameState) -> bool:
        return self.is_final(state)

    def to_move(self, state: GameState) -> int | None:
        return None if self.is_final(state) else state[1]

    def outcome(self, state: GameState) -> tuple[int, int]:
        board, turn, s0, s1 = state
        pot = s0 + s1
        won = winner(board)
        if won is not None:
            return (pot, 0) if won == 0 else (0, pot)
        if all(board):  # draw: split, the odd unit (if any) to X
            return (pot - pot // 2, pot // 2)
        # In progress: the player to move forfeits if the channel settles here.
        return (0, pot) if turn == 0 else (pot, 0)

    def present(self, state: GameState, party: int) -> dict[str, Any]:
        """The board (``"X"``, ``"O"`` or ``""`` a cell, row by row), ``party``'s mark,
        whose turn it is and who won, as ``"you"`` or ``"peer"`` (X is the opener)."""
        board = state[0]

        def side(who: int | None) -> str | None:
            return None if who is None else "you" if who == party else "peer"

        won = winner(board)
        return {
            "board": [_MARKS[cell] for cell in board],
            "you": _MARKS[party + 1],
            "turn": side(self.to_move(state)),
            "winner": "draw" if won is None and all(board) else side(won),
            "stakes": {"you": state[2 + party], "peer": state[3 - party]},
        }
