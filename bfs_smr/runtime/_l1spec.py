"""``--l1`` specifications: which L1 a node or command talks to.

- ``local:PATH`` — the shared local L1 (:mod:`bfs_smr.adapters.local`): the embedded L1's rules
  kept in a SQLite file that several processes on one machine use, with wall-clock
  windows. Create it with ``bfs-smr l1 init``.
- ``evm:URL`` — the Vyper adjudicator through a JSON-RPC node, at the address
  ``bfs-smr l1 init`` deploys it to on every chain (``evm:URL#0xADDRESS`` for another
  deployment). See docs/evm.md. Needs the ``evm`` extra.

On a local L1 a node transacts and signs channel updates as its Ed25519 identity; on the
EVM it uses a second key of its data directory, a secp256k1 key whose address is its
account (``bfs-smr init`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfs_smr._crypto import Signer
from bfs_smr._errors import LocalError
from bfs_smr._l1 import L1Adapter

__all__ = [
    "DEFAULT_EVM_WINDOW",
    "L1Access",
    "evm_address",
    "open_evm",
    "open_l1",
    "open_local_l1",
    "parse_account",
    "parse_l1_spec",
]

#: The challenge window a node on the EVM puts in its channels unless told otherwise.
DEFAULT_EVM_WINDOW = 86_400


def parse_l1_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:WHERE``.

    Raises:
        LocalError: not ``local:PATH`` or ``evm:URL``.
    """
    kind, _, where = spec.partition(":")
    if kind in ("local", "evm") and where:
        return kind, where
    raise LocalError(f"an L1 is local:PATH or evm:URL, not {spec!r}")


def _evm() -> Any:
    try:
        from bfs_smr.adapters import evm
    except ImportError as exc:
        raise LocalError(
            f"the EVM L1 needs the evm extra (pip install 'bfs-smr[evm]'): {exc}"
        ) from None
    return evm


def evm_address(secret: bytes) -> bytes | None:
    """The Ethereum address of a secp256k1 key, or None without the ``evm`` extra."""
    try:
        return bytes(_evm().Secp256k1().public_key(secret))
    except LocalError:
        return None


def parse_account(spec: str, text: str) -> bytes:
    """An account on the L1 of ``spec``: a 64-hex-digit node id on a local L1, a 20-byte
    address (``0x`` optional) on the EVM.

    Raises:
        LocalError: not that.
    """
    kind, _ = parse_l1_spec(spec)
    if kind == "local":
        from bfs_smr.runtime.store._datadir import parse_hex_id

        return parse_hex_id(text)
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 20:
        raise LocalError(
            f"an EVM account is a 20-byte address (bfs-smr init prints the node's "
            f"evm_address), got {text!r}"
        )
    return value


def open_local_l1(spec: str) -> Any:
    """The :class:`bfs_smr.adapters.local.LocalL1` named by a ``local:PATH`` spec.

    Raises:
        LocalError: not a local spec. L1Error: no L1 file there (run ``bfs-smr l1 init``).
    """
    kind, where = parse_l1_spec(spec)
    if kind != "local":
        raise LocalError(f"this command needs a local:PATH L1, not {spec!r}")
    from bfs_smr.adapters.local import LocalL1

    return LocalL1(Path(where))


def open_evm(spec: str, *, check: bool = True) -> tuple[Any, bytes]:
    """A web3 client for an ``evm:`` spec and its adjudicator's address.

    Raises:
        LocalError: a bad spec, or no evm extra. L1Error: no node answers, or (with
        ``check``) no adjudicator is there.
    """
    _, where = parse_l1_spec(spec)
    evm = _evm()
    url, address = evm.deploy.parse_evm_spec(where)
    w3 = evm.connect(url)
    address = address or evm.adjudicator_address()
    if check:
        evm.check_adjudicator(w3, address)
    return w3, address


@dataclass(frozen=True, slots=True)
class L1Access:
    """What a node uses of its L1.

    Attributes:
        spec: the ``--l1`` text.
        adapter: acting as the node's account.
        window: the challenge window of the channels the node opens, and the least it
            accepts in channels opened with it.
        signer: the key the node signs channel updates with; its public key is the node's
            identity in channel parameters (and its account on this L1).
    """

    spec: str
    adapter: L1Adapter
    window: int
    signer: Signer


def open_l1(spec: str, identity: Signer, l1_key: Any = None, window: int | None = None) -> L1Access:
    """Connect to the L1 named by ``spec``.

    Args:
        identity: the node's Ed25519 identity (its account on a local L1).
        l1_key: a callable returning the node's 32-byte secp256k1 key (the EVM only).
        window: the challenge window for the node's channels; a local L1's own is the
            default and the least allowed, the EVM's default is :data:`DEFAULT_EVM_WINDOW`.

    Raises:
        LocalError: a bad spec or window, or the L1 kind is not available in this build.
        L1Error: the L1 cannot be reached or is not a bfs-smr L1.
    """
    kind, _ = parse_l1_spec(spec)
    if kind == "local":
        chain = open_local_l1(spec)
        least = int(chain.window)
        if window is not None and window < least:
            raise LocalError(f"this local L1's challenge window is at least {least} s")
        return L1Access(spec, chain.adapter(identity.public_key), window or least, identity)
    if l1_key is None:
        raise LocalError("a node on the EVM needs its secp256k1 key")
    w3, address = open_evm(spec)
    evm = _evm()
    secret = l1_key()
    adapter = evm.EvmAdapter(w3, address, secret)
    signer = Signer(evm.Secp256k1(), secret)
    return L1Access(spec, adapter, DEFAULT_EVM_WINDOW if window is None else window, signer)
