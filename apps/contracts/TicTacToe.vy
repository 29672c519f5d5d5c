#pragma version 0.4.3
#pragma evm-version cancun
"""
@title tic-tac-toe rules
@notice The rules of apps/tictactoe.py on the EVM, for the adjudicator's force moves
        (docs/writing-an-app.md). A state is the ABI encoding of (uint8[9] board,
        uint8 turn, uint256 stake0, uint256 stake1); a command is the canonical CBOR of
        {"cell": i}: a1 64 63 65 6c 6c then one byte 0x00..0x08.
"""

MAX_STATE: constant(uint256) = 384  # 12 words: the board, the turn, two stakes
MAX_COMMAND: constant(uint256) = 64
# bit i of a mask is cell i; a line is three bits: rows 7, 56, 448, columns 73, 146, 292,
# diagonals 273, 84
FULL: constant(uint256) = 511
CELL_PREFIX: constant(Bytes[6]) = b"\xa1dcell"  # {"cell": …}: a map of one text key




@pure
@internal
def _masks(board: uint8[9]) -> (uint256, uint256):
    """The masks of X's and O's cells; reverts on a cell the app never makes."""
    x: uint256 = 0
    o: uint256 = 0
    for i: uint256 in range(9):
        c: uint8 = board[i]
        if c == 1:
            x |= 1 << i
        elif c == 2:
            o |= 1 << i
        else:
            assert c == 0, "a cell is 0, 1 or 2"
    return x, o


@pure
@internal
def _won(m: uint256) -> bool:
    return (
        m & 7 == 7
        or m & 56 == 56
        or m & 448 == 448
        or m & 73 == 73
        or m & 146 == 146
        or m & 292 == 292
        or m & 273 == 273
        or m & 84 == 84
    )


@pure
@internal
def _outcome(pot: uint256, turn: uint8, x: uint256, o: uint256) -> (uint256, uint256):
    if self._won(x):
        return pot, 0
    if self._won(o):
        return 0, pot
    if x | o == FULL:  # a draw: split, the odd unit to X
        return pot - pot // 2, pot // 2
    if turn == 0:  # in progress: the player to move forfeits
        return 0, pot
    return pot, 0


@pure
@internal
def _cell(x: uint256, o: uint256, turn: uint8, command: Bytes[MAX_COMMAND], actor: uint256) -> uint256:
    """The cell ``actor`` takes with ``command``; reverts where the app rejects it."""
    assert not (self._won(x) or self._won(o) or x | o == FULL), "the game is over"
    assert actor == convert(turn, uint256), "not your turn"
    # exactly the canonical encoding: the map, the key, one byte 0..8 and nothing after
    assert len(command) == 7 and slice(command, 0, 6) == CELL_PREFIX, 'a move is {"cell": 0..8}'
    cell: uint256 = convert(slice(command, 6, 1), uint256)
    assert cell <= 8, "cell must be an integer from 0 to 8"
    assert (x | o) & (1 << cell) == 0, "the cell is taken"
    return cell


@view
@external
def app_id() -> String[64]:
    return "tictactoe/1"


@view
@external
def to_move(state: Bytes[MAX_STATE]) -> uint256:
    board: uint8[9] = empty(uint8[9])
    turn: uint8 = 0
    s0: uint256 = 0
    s1: uint256 = 0
    board, turn, s0, s1 = abi_decode(state, (uint8[9], uint8, uint256, uint256))
    assert turn < 2, "turn must be 0 or 1"
    x: uint256 = 0
    o: uint256 = 0
    x, o = self._masks(board)
    if self._won(x) or self._won(o) or x | o == FULL:
        return 2
    return convert(turn, uint256)


@view
@external
def is_final(state: Bytes[MAX_STATE]) -> bool:
    board: uint8[9] = empty(uint8[9])
    turn: uint8 = 0
    s0: uint256 = 0
    s1: uint256 = 0
    board, turn, s0, s1 = abi_decode(state, (uint8[9], uint8, uint256, uint256))
    assert turn < 2, "turn must be 0 or 1"
    x: uint256 = 0
    o: uint256 = 0
    x, o = self._masks(board)
    return self._won(x) or self._won(o) or x | o == FULL


@view
@external
def outcome(state: Bytes[MAX_STATE]) -> (uint256, uint256):
    board: uint8[9] = empty(uint8[9])
    turn: uint8 = 0
    s0: uint256 = 0
    s1: uint256 = 0
    board, turn, s0, s1 = abi_decode(state, (uint8[9], uint8, uint256, uint256))
    assert turn < 2, "turn must be 0 or 1"
    x: uint256 = 0
    o: uint256 = 0
    x, o = self._masks(board)
    return self._outcome(s0 + s1, turn, x, o)


@view
@external
def apply(state: Bytes[MAX_STATE], command: Bytes[MAX_COMMAND], actor: uint256) -> Bytes[MAX_STATE]:
    board: uint8[9] = empty(uint8[9])
    turn: uint8 = 0
    s0: uint256 = 0
    s1: uint256 = 0
    board, turn, s0, s1 = abi_decode(state, (uint8[9], uint8, uint256, uint256))
    assert turn < 2, "turn must be 0 or 1"
    x: uint256 = 0
    o: uint256 = 0
    x, o = self._masks(board)
    cell: uint256 = self._cell(x, o, turn, command, actor)
    board[cell] = turn + 1
    return abi_encode(board, 1 - turn, s0, s1)


@view
@external
def force(state: Bytes[MAX_STATE], command: Bytes[MAX_COMMAND]) -> (uint256, Bytes[MAX_STATE], uint256, uint256):
    """What the adjudicator calls: the party to move plays ``command``; returns that
    party, the next state and its outcome."""
    board: uint8[9] = empty(uint8[9])
    turn: uint8 = 0
    s0: uint256 = 0
    s1: uint256 = 0
    board, turn, s0, s1 = abi_decode(state, (uint8[9], uint8, uint256, uint256))
    assert turn < 2, "turn must be 0 or 1"
    x: uint256 = 0
    o: uint256 = 0
    x, o = self._masks(board)
    cell: uint256 = self._cell(x, o, turn, command, convert(turn, uint256))
    board[cell] = turn + 1
    if turn == 0:
        x |= 1 << cell
    else:
        o |= 1 << cell
    out_a: uint256 = 0
    out_b: uint256 = 0
    out_a, out_b = self._outcome(s0 + s1, 1 - turn, x, o)
    return convert(turn, uint256), abi_encode(board, 1 - turn, s0, s1), out_a, out_b
