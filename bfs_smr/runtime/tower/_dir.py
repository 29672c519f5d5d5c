"""A watchtower's data directory: the node's layout, without channels or control.

- ``identity.key`` (0600): the tower's Ed25519 seed; its public key is the tower id.
- ``l1.key`` (0600): its secp256k1 key: the account it pays EVM gas from.
- ``tower.json``: the tower id (public).
- ``tower.sqlite3``: the entries and cases (:mod:`._store`), made by ``tower init``.
- ``node.lock``: held by the running tower, so two never share a store.
"""

from __future__ import annotations

import json
import secrets

from bfs_smr._crypto import Ed25519, Signer
from bfs_smr._errors import LocalError
from bfs_smr.runtime.store._datadir import DataDir, _read_key, _write_atomic, _write_private
from bfs_smr.runtime.tower._store import DB_NAME, TowerStore

__all__ = ["TowerDir"]


class TowerDir(DataDir):
    """Paths and files of one tower's data directory."""

    def init(self) -> bytes:
        """Create the directory with a fresh identity and an empty store; return the id.

        Raises:
            LocalError: it already holds a node or a tower, or cannot be written.
        """
        if self.identity_file.exists():
            what = "tower" if (self.path / DB_NAME).exists() else "node"
            raise LocalError(f"{self.path} already holds a {what} ({self._id_text()})")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            TowerStore(self.path, create=True).close()
            seed = secrets.token_bytes(32)
            _write_private(self.identity_file, seed.hex() + "\n")
            self._new_l1_key()
            tower_id = Signer(Ed25519(), seed).public_key
            _write_atomic(self.path / "tower.json", json.dumps({"tower_id": tower_id.hex()}) + "\n")
            self._sync_dir()
        except OSError as exc:
            raise LocalError(f"cannot initialise {self.path}: {exc.strerror}") from None
        return tower_id

    def _id_text(self) -> str:
        try:
            return Signer(Ed25519(), _read_key(self.identity_file, "a seed")).public_key.hex()
        except LocalError:
            return "its key is unreadable"

    def identity(self) -> Signer:
        """The tower's identity.

        Raises:
            LocalError: no tower here (run ``bfs-smr tower init``), or a damaged key.
        """
        if not (self.path / DB_NAME).exists() or not self.identity_file.exists():
            raise LocalError(
                f"{self.path} holds no tower; run: bfs-smr tower init --data-dir {self.path}"
            )
        return super().identity()

    def lock(self) -> None:
        try:
            super().lock()
        except LocalError:
            raise LocalError(f"another tower is running on {self.path}") from None
