"""A node's data directory: identity, control secret, store, and where the node listens.

Layout of ``DIR``:

- ``identity.key`` (0600): the node's Ed25519 seed, hex. Its public key is the node id.
- ``l1.key`` (0600): a secp256k1 key, hex: the node's account and channel signing key on
  the EVM (its address is the node's ``evm_address``). Made by ``init``, or on first use
  in a directory made before it existed.
- ``control.secret`` (0600): what a local client must present to the node's control
  endpoint. Anyone who can read it can move the node's money; it never leaves ``DIR``.
- ``api.token`` (0600): the bearer token of the node's HTTP API (``--http``), as
  powerful as the control secret; made by ``init``, or by the node if missing.
- ``node.json``: the node id (public).
- ``channels.sqlite3``: the durable channel store (:mod:`bfs_smr.runtime.store`), made by
  ``init``. A node never makes one: it refuses to start on a missing or empty store.
- ``control.json``: written by a running node — its pid, control port, listen address
  and HTTP address (if any); removed on a clean shutdown.
- ``node.lock``: held (``flock``) by the running node, so two nodes never share a store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any

from bfs_smr._crypto import Ed25519, Signer
from bfs_smr._errors import LocalError
from bfs_smr.runtime.store import DB_NAME, Store

#: The order of the secp256k1 group: an EVM key is a number from 1 to this, exclusive.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

__all__ = [
    "DataDir",
    "parse_hex_id",
    "parse_hostport",
]


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``.

    Raises:
        LocalError: not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise LocalError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_hex_id(text: str, what: str = "node id") -> bytes:
    """A 32-byte id written as 64 hex digits.

    Raises:
        LocalError: not 64 hex digits.
    """
    value = _hex32(text)
    if value is None:
        raise LocalError(f"a {what} is 64 hex digits, got {text!r}")
    return value


def _hex32(text: str) -> bytes | None:
    """The 32 bytes ``text`` writes as hex, or None; callers word their own errors."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return value if len(value) == 32 else None


def _read_key(path: Path, what: str) -> bytes:
    """A 32-byte key kept as hex in ``path``. Errors never quote the file: it is a secret.

    Raises:
        LocalError: unreadable, or not 64 hex digits.
    """
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None
    key = _hex32(text)
    if key is None:
        raise LocalError(f"{path} is damaged (not {what})")
    return key


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, durably; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DataDir:
    """Paths and files of one node's data directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.identity_file = self.path / "identity.key"
        self.secret_file = self.path / "control.secret"
        self.token_file = self.path / "api.token"
        self.l1_key_file = self.path / "l1.key"
        self.node_file = self.path / "node.json"
        self.control_file = self.path / "control.json"
        self.lock_file = self.path / "node.lock"
        self._lock: IO[str] | None = None

    def init(self) -> bytes:
        """Create the directory with a fresh identity and control secret; return the id.

        Raises:
            LocalError: it already holds a node, or cannot be written.
        """
        if self.identity_file.exists():
            node_id = self.identity().public_key.hex()
            raise LocalError(f"{self.path} already holds node {node_id}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # The store first: a crash in ``init`` leaves no identity, so ``init`` runs
            # again, and never a node without a store (which the node refuses to start).
            Store(self.path).close()
            seed = secrets.token_bytes(32)
            _write_private(self.identity_file, seed.hex() + "\n")
            self._new_l1_key()
            with contextlib.suppress(FileExistsError):
                _write_private(self.secret_file, secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):
                _write_private(self.token_file, secrets.token_hex(32) + "\n")
            signer = Signer(Ed25519(), seed)
            _write_atomic(self.node_file, json.dumps({"node_id": signer.public_key.hex()}) + "\n")
            self._sync_dir()
        except OSError as exc:
            raise LocalError(f"cannot initialise {self.path}: {exc.strerror}") from None
        return signer.public_key

    def new_store(self) -> None:
        """Make an empty channel store for the node here, which has none (or an empty file).

        A node never makes its store itself: a missing or empty one means its channels
        were lost, and only its operator may decide to go on without them.

        Raises:
            LocalError: no node here, or it has a store (with anything in it).
        """
        self.identity()
        store = self.path / DB_NAME
        if store.exists() and store.stat().st_size > 0:
            raise LocalError(f"{store} exists; move it away first if you mean to lose it")
        store.unlink(missing_ok=True)
        Store(self.path).close()

    def identity(self) -> Signer:
        """The node's signing identity.

        Raises:
            LocalError: no node here (run ``bfs-smr init``), or the key file is damaged.
        """
        if not self.identity_file.exists():
            raise LocalError(f"{self.path} holds no node; run: bfs-smr init --data-dir {self.path}")
        return Signer(Ed25519(), _read_key(self.identity_file, "a 32-byte hex seed"))

    def _sync_dir(self) -> None:
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _new_l1_key(self) -> None:
        # Durable before any channel can name its address: a key lost in a crash would
        # leave channels nobody can sign for.
        key = secrets.randbelow(_SECP256K1_N - 1) + 1
        with contextlib.suppress(FileExistsError):
            _write_private(self.l1_key_file, key.to_bytes(32, "big").hex() + "\n")
        self._sync_dir()

    def l1_key(self) -> bytes:
        """The node's secp256k1 key (its EVM account), made now if the directory predates it.

        Raises:
            LocalError: no node here, or the key file is damaged or unreadable.
        """
        self.identity()  # a node must be here
        if not self.l1_key_file.exists():
            try:
                self._new_l1_key()
            except OSError as exc:
                raise LocalError(f"cannot write {self.l1_key_file}: {exc.strerror}") from None
        key = _read_key(self.l1_key_file, "a secp256k1 key in hex")
        if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
            raise LocalError(f"{self.l1_key_file} is damaged (not a secp256k1 key in hex)")
        return key

    def secret(self) -> str:
        try:
            text = self.secret_file.read_text().strip()
        except OSError as exc:
            raise LocalError(f"cannot read {self.secret_file}: {exc.strerror}") from None
        if len(text) != 64:
            raise LocalError(f"{self.secret_file} is damaged")
        return text

    def api_token(self) -> str:
        """The HTTP API's bearer token (64 hex digits), made now (0600) if missing.

        Raises:
            LocalError: no node here, or the token file is damaged or unwritable.
        """
        self.identity()  # a node must be here
        if not self.token_file.exists():
            try:
                with contextlib.suppress(FileExistsError):
                    _write_private(self.token_file, secrets.token_hex(32) + "\n")
                self._sync_dir()
            except OSError as exc:
                raise LocalError(f"cannot write {self.token_file}: {exc.strerror}") from None
        try:
            mode = self.token_file.stat().st_mode
            text = self.token_file.read_text().strip()
        except OSError as exc:
            raise LocalError(f"cannot read {self.token_file}: {exc.strerror}") from None
        if mode & 0o077:
            # Whoever reads it drives the API (opens, pays, closes): the owner's alone.
            raise LocalError(
                f"{self.token_file} may be read by others (mode {mode & 0o777:o}): "
                f"chmod 600 {self.token_file}"
            )
        if _hex32(text) is None:
            raise LocalError(f"{self.token_file} is damaged (not 64 hex digits)")
        return text

    def lock(self) -> None:
        """Take the directory for this process.

        Raises:
            LocalError: another node process is using it.
        """
        handle = open(self.lock_file, "a")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LocalError(f"another node is running on {self.path}") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_control(self, info: dict[str, Any]) -> None:
        _write_atomic(self.control_file, json.dumps(info) + "\n")

    def remove_control(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.control_file.unlink()

    def control(self) -> dict[str, Any]:
        """Where the running node's control endpoint is.

        Raises:
            LocalError: no node is running on this directory.
        """
        try:
            info: dict[str, Any] = json.loads(self.control_file.read_text())
        except (FileNotFoundError, ValueError):
            raise LocalError(
                f"no node is running on {self.path}; start one with: bfs-smr node --data-dir "
                f"{self.path} --listen HOST:PORT --l1 SPEC"
            ) from None
        return info
