"""One adjudicator per chain, at an address anyone can compute: ``evm:URL`` needs no more.

The adjudicator has no constructor arguments and no owner, so every deployment of the
committed artifact behaves the same. It is deployed through the deterministic deployment
proxy (``0x4e59…956C``, present on anvil by default and on most public chains) with a
fixed salt, which puts it at a CREATE2 address that depends on its bytecode alone. Two
nodes given only the RPC URL therefore find the same contract, and a node refuses to run
against an address whose code is not the artifact's.

``evm:URL#0xADDRESS`` names another deployment explicitly (a chain without the proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bfs_smr.adapters.evm.artifact import load_artifact, load_rules_artifact
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import Web3Exception
from web3.providers.rpc import HTTPProvider

from bfs_smr import L1Error, LocalError, StateMachine
from bfs_smr.plugins import available_apps

__all__ = [
    "CREATE2_DEPLOYER",
    "RULES_SALT",
    "SALT",
    "adjudicator_address",
    "check_adjudicator",
    "connect",
    "deploy_adjudicator",
    "deploy_all_rules",
    "deploy_rules",
    "deployment_block",
    "parse_evm_spec",
    "rules_address",
]

#: The deterministic deployment proxy (Arachnid's), at the same address on every chain.
CREATE2_DEPLOYER = bytes.fromhex("4e59b44847b379578588920ca78fbf26c0b4956c")
#: The salt bfs-smr deploys its adjudicator with.
SALT = keccak(b"bfs-smr adjudicator")
#: The salt apps' rules contracts are deployed with.
RULES_SALT = keccak(b"bfs-smr rules")
#: The proxy's runtime code (what DevChain puts at genesis on the in-process chain).
CREATE2_DEPLOYER_CODE = bytes.fromhex(
    "7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf3"
)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _create2_address(salt: bytes, init_code: bytes) -> bytes:
    return keccak(b"\xff" + CREATE2_DEPLOYER + salt + keccak(init_code))[12:]


def adjudicator_address() -> bytes:
    """Where :func:`deploy_adjudicator` puts the committed artifact on any chain."""
    return _create2_address(SALT, _hex(load_artifact()["bytecode"]))


def rules_address(app: StateMachine[Any]) -> bytes | None:
    """Where :func:`deploy_rules` puts ``app``'s rules contract on any chain (it depends on
    the contract's code alone, so both parties compute it); ``None``: the app has none."""
    art = load_rules_artifact(app)
    if art is None:
        return None
    return _create2_address(RULES_SALT, _hex(art["bytecode"]))


def parse_evm_spec(where: str) -> tuple[str, bytes | None]:
    """``URL`` or ``URL#0xADDRESS`` → the RPC URL and the explicit adjudicator, if any.

    Raises:
        LocalError: not an http(s) or ws(s) URL, or a malformed address.
    """
    url, sep, fragment = where.partition("#")
    if not url.startswith(("http://", "https://")):
        raise LocalError(f"an EVM L1 is evm:http(s)://HOST:PORT[#0xADDRESS], not evm:{where!r}")
    if not sep:
        return url, None
    try:
        address = _hex(fragment)
    except ValueError:
        address = b""
    if len(address) != 20:
        raise LocalError(f"{fragment!r} is not a 20-byte contract address")
    return url, address


def connect(url: str) -> Web3:
    """A web3 client of the node at ``url``.

    Raises:
        L1Error: nothing answers there.
    """
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    try:
        w3.eth.chain_id  # noqa: B018 - the cheapest call that proves a node answers
    except (Web3Exception, OSError, ValueError) as exc:
        raise L1Error(f"no EVM node answers at {url}: {type(exc).__name__}") from None
    return w3


def check_adjudicator(w3: Web3, address: bytes) -> None:
    """Refuse an address whose code is not the committed adjudicator's.

    Raises:
        L1Error: no contract there (run ``bfs-smr l1 init``), or another contract.
    """
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if not code:
        raise L1Error(
            f"no adjudicator at 0x{address.hex()} on this chain; deploy it with: "
            "bfs-smr l1 init --l1 evm:URL"
        )
    if code != _hex(load_artifact()["bytecode_runtime"]):
        raise L1Error(f"the contract at 0x{address.hex()} is not this release's adjudicator")


def deployment_block(w3: Web3, address: bytes) -> int:
    """The first block in which ``address`` has code: where its logs can begin.

    A binary search over historical state (about 25 calls on a chain of 20 million
    blocks). A node that keeps no old state (not an archive node) cannot answer it, and
    then the answer is 0: every block may hold logs.

    Raises:
        L1Error: there is no code at ``address`` now.
    """
    where = to_checksum_address(address)
    high = int(w3.eth.block_number)
    if not w3.eth.get_code(where, high):
        raise L1Error(f"no contract at 0x{address.hex()} on this chain")
    low = 0  # invariant: code at ``high``; none before ``low``
    try:
        while low < high:
            mid = (low + high) // 2
            if w3.eth.get_code(where, mid):
                high = mid
            else:
                low = mid + 1
    except (Web3Exception, ValueError):  # old state pruned: assume the worst
        return 0
    return high


#: Sends a transaction (to, data) and returns once it is mined, or raises L1Error: a party's
#: own signed transaction (the EVM adapter's), where no unlocked account pays.
Send = Callable[[str, bytes], object]


def _deploy(
    w3: Web3, salt: bytes, init_code: bytes, what: str, *, sender: Any, send: Send | None = None
) -> bytes:
    if not w3.eth.get_code(to_checksum_address(CREATE2_DEPLOYER)):
        raise L1Error(
            "this chain has no deterministic deployment proxy at "
            f"0x{CREATE2_DEPLOYER.hex()}; deploy Adjudicator.json yourself and use "
            "evm:URL#0xADDRESS"
        )
    if send is not None:
        send(to_checksum_address(CREATE2_DEPLOYER), salt + init_code)
    else:
        if sender is None:
            accounts = w3.eth.accounts
            if not accounts:
                raise L1Error(
                    f"the node has no unlocked account to pay for the {what}'s deployment"
                )
            sender = accounts[0]
        tx_hash = w3.eth.send_transaction(
            {"from": sender, "to": to_checksum_address(CREATE2_DEPLOYER), "data": salt + init_code}
        )
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise L1Error(f"the {what}'s deployment reverted")
    address = _create2_address(salt, init_code)
    if not w3.eth.get_code(to_checksum_address(address)):
        raise L1Error(f"the {what}'s deployment left no code at 0x{address.hex()}")
    return address


def deploy_adjudicator(w3: Web3, sender: Any = None) -> tuple[bytes, bool]:
    """Deploy the adjudicator at :func:`adjudicator_address` unless it is there already.

    Args:
        sender: an unlocked account of the node to pay for the deployment (default: its
            first, as on anvil).

    Returns:
        The address, and whether this call deployed it.

    Raises:
        L1Error: the chain has no deployment proxy or no unlocked account, or the
            deployment failed.
    """
    address = adjudicator_address()
    if not w3.eth.get_code(to_checksum_address(address)):
        _deploy(w3, SALT, _hex(load_artifact()["bytecode"]), "adjudicator", sender=sender)
        check_adjudicator(w3, address)
        return address, True
    check_adjudicator(w3, address)
    return address, False


def deploy_rules(
    w3: Web3, app: StateMachine[Any], sender: Any = None, *, send: Send | None = None
) -> tuple[bytes, bool]:
    """Deploy ``app``'s rules contract at :func:`rules_address` unless it is there.

    Args:
        sender: an unlocked account of the node to pay (default: its first).
        send: send the deployment otherwise (a party's own signed transaction).

    Returns:
        The address, and whether this call deployed it.

    Raises:
        LocalError: the app has no rules contract on the EVM.
        L1Error: as :func:`deploy_adjudicator`.
    """
    art = load_rules_artifact(app)
    if art is None:
        raise LocalError(f"{app.app_id} has no rules contract on the EVM")
    address = _create2_address(RULES_SALT, _hex(art["bytecode"]))
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if code:
        if "bytecode_runtime" in art and code != _hex(art["bytecode_runtime"]):
            raise L1Error(f"the contract at 0x{address.hex()} is not {app.app_id}'s rules")
        return address, False
    _deploy(w3, RULES_SALT, _hex(art["bytecode"]), f"{app.app_id} rules", sender=sender, send=send)
    return address, True


def deploy_all_rules(w3: Web3, sender: Any = None) -> dict[str, tuple[bytes, bool]]:
    """Deploy the rules contract of every installed app that has one; by app id."""
    done = {}
    for cls in available_apps().values():
        app = cls()
        if load_rules_artifact(app) is not None:
            done[app.app_id] = deploy_rules(w3, app, sender)
    return done
