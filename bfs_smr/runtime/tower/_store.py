"""A watchtower's durable store: ``DIR/tower.sqlite3``.

Tables::

    meta     key TEXT PK, value       'since': the next L1 event index to read
    entries  id, client, locator,     one row per (client node, channel): a fixed-size
             seq, entry               sealed entry (see _seal); seq is 8 bytes, big-endian.
                                      A rowid table, so that an entry of the default slot
                                      sits in its row, two rows to a 4 KiB page (in a
                                      WITHOUT ROWID table it would spill into an overflow
                                      page of its own: 4.8 KB a channel instead of 2.2)
    cases    channel PK, locator,     a channel whose unilateral close revealed its watch
             secret, params, update,  secret: what the tower read, the newest update it
             done                     holds for it, and whether it is settled

An entry's row has the same size at every seq (the seq is a fixed 8-byte blob and the
entry a fixed-size blob), so a channel costs the tower the same after 10 updates and
after 100,000. SQLite runs in WAL mode with ``synchronous=FULL``: a put is acknowledged
only once it is durable, and a tower killed at any instant resumes from what it acked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bfs_smr._errors import BfsSmrError

__all__ = ["DB_NAME", "Case", "TowerStore", "TowerStoreError"]

DB_NAME = "tower.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (   -- a rowid table: an entry fits in its row's page
    id INTEGER PRIMARY KEY,
    client BLOB NOT NULL, locator BLOB NOT NULL, seq BLOB NOT NULL, entry BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_by_node ON entries (client, locator);
CREATE INDEX IF NOT EXISTS entries_by_locator ON entries (locator);
CREATE TABLE IF NOT EXISTS cases (
    channel BLOB PRIMARY KEY, locator BLOB NOT NULL, secret BLOB NOT NULL,
    params BLOB NOT NULL, update_ BLOB NOT NULL, done INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cases_by_locator ON cases (locator);
"""


class TowerStoreError(BfsSmrError):
    """The tower's store cannot be read or written."""


@dataclass(slots=True)
class Case:
    """A channel whose close revealed its secret: what the tower holds for it.

    ``params`` and ``update`` are canonical CBOR (``ChannelParams.to_value()``, the newest
    ``SignedUpdate.to_value()``).
    """

    channel: bytes
    locator: bytes
    secret: bytes
    params: bytes
    update: bytes
    done: bool


def _seq_blob(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


class TowerStore:
    """The tower's entries and cases.

    Args:
        data_dir: the tower's directory.
        create: make the store if missing (``tower init`` does; ``tower run`` refuses a
            missing one: it would have lost every entry it acknowledged).

    Raises:
        TowerStoreError: it cannot be opened, or is missing and ``create`` is False.
    """

    def __init__(self, data_dir: Path | str, *, create: bool = False) -> None:
        self.path = Path(data_dir) / DB_NAME
        if not create and not self.path.exists():
            raise TowerStoreError(f"{self.path} is missing: every entry this tower held is lost")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise TowerStoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _tx(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise TowerStoreError(f"{self.path}: {exc}") from None

    # -- entries ------------------------------------------------------------------------

    def seq_of(self, client: bytes, loc: bytes) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM entries WHERE client = ? AND locator = ?", (client, loc)
        ).fetchone()
        return None if row is None else int.from_bytes(row[0], "big")

    def count(self, client: bytes) -> int:
        """How many entries ``client`` keeps (reads them all: not for a hot path)."""
        row = self._db.execute("SELECT COUNT(*) FROM entries WHERE client = ?", (client,))
        return int(row.fetchone()[0])

    def counts(self) -> dict[bytes, int]:
        """How many entries each node keeps (one pass over the table)."""
        rows = self._db.execute("SELECT client, COUNT(*) FROM entries GROUP BY client")
        return {client: int(n) for client, n in rows.fetchall()}

    def total(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def put_many(self, rows: Iterable[tuple[bytes, bytes, int, bytes]]) -> None:
        """File ``(client, locator, seq, entry)`` rows in one transaction (one fsync). A row
        replaces an entry only at a higher seq: an older one never wins."""
        self._tx(
            (
                "INSERT INTO entries (client, locator, seq, entry) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (client, locator) DO "
                "UPDATE SET seq = excluded.seq, entry = excluded.entry "
                "WHERE excluded.seq > entries.seq",
                (client, loc, _seq_blob(seq), entry),
            )
            for client, loc, seq, entry in rows
        )

    def entries_at(self, loc: bytes) -> list[tuple[bytes, int, bytes]]:
        """Every client's ``(client, seq, entry)`` filed under ``loc``."""
        rows = self._db.execute(
            "SELECT client, seq, entry FROM entries WHERE locator = ?", (loc,)
        ).fetchall()
        return [(c, int.from_bytes(s, "big"), e) for c, s, e in rows]

    def row_bytes(self, client: bytes, loc: bytes) -> int:
        """What one entry's row holds, in bytes (its columns' lengths)."""
        row = self._db.execute(
            "SELECT length(client) + length(locator) + length(seq) + length(entry) "
            "FROM entries WHERE client = ? AND locator = ?",
            (client, loc),
        ).fetchone()
        return 0 if row is None else int(row[0])

    # -- cases and the L1 cursor --------------------------------------------------------

    def since(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'since'").fetchone()
        return 0 if row is None else int(row[0])

    def save_cases(self, cases: Iterable[Case], since: int | None = None) -> None:
        """Write (new or changed) cases and, with them, the L1 cursor: a tower killed after
        this resumes with both, and one killed before reads the same events again."""
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?, ?, ?)",
                (c.channel, c.locator, c.secret, c.params, c.update, int(c.done)),
            )
            for c in cases
        ]
        if since is not None:
            statements.append(("INSERT OR REPLACE INTO meta VALUES ('since', ?)", (since,)))
        self._tx(statements)

    def cases(self, *, open_only: bool = True) -> list[Case]:
        sql = "SELECT channel, locator, secret, params, update_, done FROM cases"
        if open_only:
            sql += " WHERE done = 0"
        return [_case(row) for row in self._db.execute(sql).fetchall()]

    def case_at(self, loc: bytes) -> list[Case]:
        rows = self._db.execute(
            "SELECT channel, locator, secret, params, update_, done FROM cases WHERE locator = ?",
            (loc,),
        ).fetchall()
        return [_case(row) for row in rows]


def _case(row: tuple[bytes, bytes, bytes, bytes, bytes, int]) -> Case:
    return Case(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
