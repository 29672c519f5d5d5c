"""Development chains: the in-process py-evm chain and anvil, with a faucet and a clock.

:class:`DevChain` wraps a web3 client of a development node (eth-tester's py-evm backend
in-process, or any node whose RPC has unlocked funded accounts, such as anvil) and adds
what tests, demos and the gas report need beyond the adapter: deploying the adjudicator,
funding accounts from the node's own funded account, and moving block time forward.

:func:`find_anvil` / :func:`install_anvil` / :class:`Anvil` get and run the anvil node
from the npm package ``@foundry-rs/anvil`` (it ships the platform binary inside).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from bfs_smr.adapters.evm._adapter import EvmAdapter
from bfs_smr.adapters.evm.artifact import load_artifact
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint

from bfs_smr import LocalError

__all__ = [
    "ANVIL_NPM_PACKAGE",
    "Anvil",
    "DevChain",
    "find_anvil",
    "install_anvil",
]

#: The pinned npm package anvil comes from.
ANVIL_NPM_PACKAGE = "@foundry-rs/anvil@1.7.1"


class DevChain:
    """A development chain with the adjudicator deployed.

    Use :meth:`embedded` (in-process py-evm) or :meth:`rpc` (e.g. anvil).
    """

    def __init__(self, w3: Web3, *, kind: str) -> None:
        self.w3 = w3
        self.kind = kind
        self.faucet = w3.eth.accounts[0]
        self.deploy_receipt: Any = None
        self.address = b""

    @classmethod
    def embedded(
        cls, *, genesis_code: Mapping[bytes, bytes] | None = None, rules: bool = True
    ) -> DevChain:
        """A fresh in-process chain (eth-tester with the py-evm backend).

        Args:
            genesis_code: runtime code to place at addresses in the genesis state (tests
                use it to make a channel participant a hostile contract).
            rules: deploy the installed apps' rules contracts too.
        """
        from bfs_smr.adapters.evm.deploy import CREATE2_DEPLOYER, CREATE2_DEPLOYER_CODE
        from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]
        from web3 import EthereumTesterProvider

        # the deployment proxy, as on anvil and most chains: rules contracts go through it
        code = {CREATE2_DEPLOYER: CREATE2_DEPLOYER_CODE, **(genesis_code or {})}
        if genesis_code:
            state = PyEVMBackend.generate_genesis_state(num_accounts=1)
        else:
            state = PyEVMBackend.generate_genesis_state()
        for address, runtime in code.items():
            state[bytes(address)] = {"balance": 0, "nonce": 0, "code": runtime, "storage": {}}
        backend = PyEVMBackend(genesis_state=state)
        tester = EthereumTester(backend)
        return cls(Web3(EthereumTesterProvider(tester)), kind="embedded").deploy(rules=rules)

    @classmethod
    def rpc(cls, url: str) -> DevChain:
        """A node at ``url`` whose first account is unlocked and funded (anvil's are)."""
        return cls(Web3(HTTPProvider(url, request_kwargs={"timeout": 30})), kind="rpc").deploy()

    def deploy(self, *, rules: bool = True) -> DevChain:
        """Deploy the committed adjudicator artifact from the faucet account, and (unless
        ``rules`` is false) the rules contract of every installed app that has one, through
        the deployment proxy."""
        from bfs_smr.adapters.evm.deploy import deploy_all_rules

        art = load_artifact()
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx_hash = factory.constructor().transact({"from": self.faucet})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1 or receipt["contractAddress"] is None:
            raise LocalError("adjudicator deployment failed")
        self.deploy_receipt = receipt
        self.address = bytes.fromhex(receipt["contractAddress"][2:])
        if rules:
            deploy_all_rules(self.w3, self.faucet)
        return self

    def adapter(self, secret: bytes) -> EvmAdapter:
        """A client of the adjudicator transacting as ``secret``'s account."""
        return EvmAdapter(self.w3, self.address, secret)

    def mint(self, account: bytes, amount: int) -> None:
        """Send ``amount`` wei from the node's funded account to ``account``."""
        if amount <= 0:
            return
        tx_hash = self.w3.eth.send_transaction(
            {
                "from": self.faucet,
                "to": to_checksum_address(account),
                "value": amount,  # type: ignore[typeddict-item]
            }
        )
        self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def set_code(self, address: bytes, code: bytes) -> None:
        """Replace the code at ``address`` (RPC nodes with ``anvil_setCode`` only)."""
        if self.kind == "embedded":
            raise LocalError("the embedded chain takes code only at genesis (genesis_code=)")
        self.w3.provider.make_request(
            RPCEndpoint("anvil_setCode"), [to_checksum_address(address), "0x" + code.hex()]
        )

    def advance(self, seconds: int) -> None:
        """Mine a block ``seconds`` later than the latest one."""
        if seconds < 0:
            raise LocalError("time only moves forward")
        if self.kind == "embedded":
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            tester.time_travel(self.now() + seconds)
        else:
            provider = self.w3.provider
            provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [self.now() + seconds])
            provider.make_request(RPCEndpoint("evm_mine"), [])


# -- anvil ----------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("BFS_SMR_ANVIL_DIR") or Path(base) / "bfs-smr" / "anvil")


def find_anvil(prefix: Path | None = None) -> Path | None:
    """The anvil binary from the npm package under ``prefix`` (or on PATH), if present."""
    prefix = prefix or _cache_dir()
    modules = prefix / "node_modules" / "@foundry-rs"
    if modules.is_dir():
        for platform_dir in sorted(modules.glob("anvil-*")):
            binary = platform_dir / "bin" / "anvil"
            if binary.is_file() and os.access(binary, os.X_OK):
                return binary
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def install_anvil(prefix: Path | None = None) -> Path:
    """``npm install`` the pinned anvil package under ``prefix`` unless it is there.

    Raises:
        FileNotFoundError: npm is not installed.
        LocalError: the install ran but no binary came out.
    """
    prefix = prefix or _cache_dir()
    found = find_anvil(prefix)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed; anvil comes from the npm registry")
    prefix.mkdir(parents=True, exist_ok=True)
    # One install at a time (test workers in parallel, two demos): the others wait for it.
    with (prefix / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_anvil(prefix)
        if found is not None:
            return found
        proc = subprocess.run(  # noqa: S603 - fixed arguments, npm from PATH
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), ANVIL_NPM_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    found = find_anvil(prefix)
    if found is None:
        raise LocalError(
            f"npm install {ANVIL_NPM_PACKAGE} gave no anvil binary "
            f"(exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Anvil:
    """An anvil node on 127.0.0.1 and a free port; a context manager that stops it.

    Args:
        binary: the anvil executable (see :func:`install_anvil`).
        block_time: mine a block every this many seconds, not only on transactions, so
            block time follows the clock (node tests wait out challenge windows).
    """

    def __init__(self, binary: Path, *, block_time: int | None = None) -> None:
        self.binary = binary
        self.block_time = block_time
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Anvil:
        args = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        w3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalError(f"anvil exited with {self.process.returncode}")
            try:
                if w3.is_connected():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalError(f"anvil did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
