"""How the node commands print their results for people (``--json`` prints them whole).

Ids are what people copy from here into the next command, so they are never cut, folded
or put in a table cell: each one is printed whole, on a line of its own or after a short
label, in plain text that no terminal width rewraps (a 64-hex id and its label fit 80
columns).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from bfs_smr._errors import BfsSmrError

__all__ = ["countdown", "print_human", "show_channel", "utc", "wait_with_progress"]

#: Labels are padded to this width; a label and a 64-hex id fit 80 columns.
_LABEL = 12


def print_human(command: str, result: dict[str, Any], out: TextIO | None = None) -> None:
    """Print a node command's result for people."""
    out = out or sys.stdout
    if command == "channel" and "channels" in result:
        _print_list(result["channels"], out)
    elif command == "channel" and "view" in result:
        show_channel(result, out)
    else:
        _print_fields(result, out)
    out.flush()


def _print_fields(result: dict[str, Any], out: TextIO) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(key, file=out)
            peer = result.get("peer")
            for k, v in value.items():
                who = ("peer " if k == peer else "you  ") if peer and len(k) == 64 else ""
                print(f"  {who}{k}  {_text(v)}", file=out)
        elif isinstance(value, list):
            print(key if value else f"{key:<{_LABEL}} (none)", file=out)
            for item in value:
                print(f"  {_text(item)}", file=out)
        elif key == "deadline" and type(value) is int:
            _line(key, f"{utc(value)} ({countdown(value)})", out)
        else:
            _line(key, _text(value), out)


def _line(label: str, text: str, out: TextIO) -> None:
    if max(len(label), _LABEL) + 1 + len(text) <= 80 or len(label) >= _LABEL:
        print(f"{label:<{_LABEL}} {text}", file=out)
    else:  # the value on a line of its own: never folded
        print(label, file=out)
        print(f"  {text}", file=out)


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if value is None:
        return "-"
    return str(value)


def _sides(ch: dict[str, Any], amounts: dict[str, int] | None) -> str:
    """``{node id: amount}`` as "you N, peer M" (from the channel's peer id)."""
    if not amounts:
        return "-"
    peer = ch["peer"]
    mine = sum(v for k, v in amounts.items() if k != peer)
    return f"you {mine:,}, peer {amounts.get(peer, 0):,}"


def utc(seconds: int) -> str:
    """Unix seconds as a UTC date and time."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def countdown(seconds: int, now: float | None = None) -> str:
    """How long until ``seconds`` (Unix), in words: "in 4 min 12 s", or "passed"."""
    left = int(seconds - (time.time() if now is None else now))
    if left <= 0:
        return "passed"
    days, rest = divmod(left, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"in {days} d {hours} h"
    if hours:
        return f"in {hours} h {minutes} min"
    return f"in {minutes} min {secs} s" if minutes else f"in {secs} s"


def _turn_words(view: dict[str, Any]) -> str:
    winner = view.get("winner")
    if winner == "draw":
        return "a draw"
    if winner in ("you", "peer"):
        return "you won" if winner == "you" else "the peer won"
    turn = view.get("turn")
    if turn == "you":
        return "your move"
    if turn == "peer":
        return "the peer's move"
    return "-"


def _board(cells: list[str]) -> list[str]:
    """A 3×3 grid; an empty cell shows its number, the one a move names."""
    rows = []
    for r in range(3):
        rows.append(" | ".join(cells[3 * r + c] or str(3 * r + c) for c in range(3)))
    return ["  " + rows[0], "  --+---+--", "  " + rows[1], "  --+---+--", "  " + rows[2]]


def _view_lines(ch: dict[str, Any]) -> list[tuple[str, str] | str]:
    """The app's view (``present``) in words: the known shapes, else its JSON."""
    view = ch.get("view")
    if view is None:
        return []
    if "board" in view and isinstance(view["board"], list) and len(view["board"]) == 9:
        return [
            *_board([str(c) for c in view["board"]]),
            ("you play", str(view.get("you", "-"))),
            ("game", _turn_words(view)),
        ]
    if set(view) == {"mine", "theirs"}:
        return [("balance", f"you {view['mine']:,}, peer {view['theirs']:,}")]
    if set(view) == {"count"}:
        return [("count", f"{view['count']:,}")]
    return [("view", json.dumps(view))]


def show_channel(ch: dict[str, Any], out: TextIO | None = None) -> None:
    """``channel show``: the channel, the app's view, deadlines, pending commands."""
    out = out or sys.stdout
    _line("channel", ch["channel"], out)
    _line("peer", ch["peer"], out)
    l1 = ch.get("l1") or "not on L1 yet"
    _line("app", f"{ch['app']}, seq {ch['seq']}, {ch['phase']} (L1: {l1})", out)
    for item in _view_lines(ch):
        if isinstance(item, str):
            print(item, file=out)
        else:
            _line(*item, out)
    if ch.get("forced_seq") is not None:
        _line("dispute", f"position after the move forced on L1 at seq {ch['forced_seq']}", out)
    if ch.get("payouts"):
        _line("paid", _sides(ch, ch["payouts"]), out)
    else:
        when = "if the window ended now" if ch["phase"] == "closing" else "if closed now"
        _line("outcome", f"{_sides(ch, ch.get('outcome'))} ({when})", out)
    if ch.get("deadline") is not None:
        _line("deadline", f"{utc(ch['deadline'])} ({countdown(ch['deadline'])})", out)
    pending = ch.get("pending", 0)
    _line("pending", f"{pending} command{'' if pending == 1 else 's'} not yet committed", out)
    for label, seq in (ch.get("towers") or {}).items():
        _line("tower", f"{label}: {'nothing yet' if seq is None else f'seq {seq}'}", out)


def _print_list(channels: list[dict[str, Any]], out: TextIO) -> None:
    if not channels:
        print("no channels (channel list --all shows settled ones too)", file=out)
    for ch in channels:
        print(ch["channel"], file=out)
        words = f"  {ch['app']}, seq {ch['seq']}, {ch['phase']}: {_sides(ch, ch.get('outcome'))}"
        view = ch.get("view") or {}
        if ("turn" in view or "winner" in view) and ch.get("payouts") is None:
            words += f"; {_turn_words(view)}"
        print(words, file=out)


def _gist(text: str) -> str:
    """A status line without its countdown: what a change of status is judged by."""
    return text.split(" (", 1)[0]


def close_status(ch: dict[str, Any]) -> str:
    """One line on where a close stands, from the channel's ``show``."""
    deadline = ch.get("deadline")
    if ch.get("payouts"):
        return f"paid out: {_sides(ch, ch['payouts'])}"
    if ch["phase"] == "closing" and deadline is not None:
        what = "a dispute on L1" if ch.get("forced_seq") is not None else "closing on L1"
        return (
            f"{what}: the window ends {utc(deadline)} ({countdown(deadline)}); "
            f"then {_sides(ch, ch.get('outcome'))}"
        )
    return f"closing: {ch['phase']} (L1: {ch.get('l1') or 'none'}); waiting for the L1"


def wait_with_progress(
    run: Callable[[], dict[str, Any]],
    look: Callable[[], dict[str, Any]],
    *,
    err: TextIO | None = None,
    every: float = 15.0,
) -> dict[str, Any]:
    """Return ``run()`` (a close that waits for the L1), telling the operator meanwhile
    where it stands from ``look()``: a live status line with the countdown on a
    terminal, else a line on ``err`` when the status changes or ``every`` seconds."""
    err = err or sys.stderr
    outcome: list[dict[str, Any]] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(run())
        except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()

    def status() -> str | None:
        try:
            return close_status(look())
        except (BfsSmrError, OSError):  # the node is busy or gone: the close will say
            return None

    if err.isatty():
        from rich.console import Console

        with Console(file=err).status("closing…") as line:
            while worker.is_alive():
                worker.join(1.0)
                text = status() if worker.is_alive() else None
                if text:
                    line.update(text)
    else:
        said, said_at = "", 0.0
        while True:
            worker.join(1.0)
            if not worker.is_alive():
                break
            text = status()
            if text and (_gist(text) != _gist(said) or time.monotonic() - said_at >= every):
                print(text, file=err, flush=True)
                said, said_at = text, time.monotonic()
    if failure:
        raise failure[0]
    return outcome[0]
