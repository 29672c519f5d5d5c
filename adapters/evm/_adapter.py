"""The EVM adapter: one party's web3 client of a deployed adjudicator."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

import requests
from bfs_smr.adapters.evm._crypto import Secp256k1
from bfs_smr.adapters.evm._format import EvmFormat, binding
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxParams, TxReceipt

from bfs_smr import (
    ChannelParams,
    CodecError,
    CommandEntry,
    L1Adapter,
    L1ChannelInfo,
    L1ChannelStatus,
    L1Error,
    L1Event,
    L1EventKind,
    LocalError,
    SignedUpdate,
    Update,
    decode,
    encode,
    hash_bytes,
)
from bfs_smr.plugins import load_app

__all__ = ["LOG_RANGE", "EvmAdapter", "channel_key", "decode_slot"]

P = ParamSpec("P")
R = TypeVar("R")

#: What a failing RPC endpoint raises (connection refused or dropped, a timeout, an HTTP
#: error, a JSON-RPC error): reported as L1Error, so callers retry instead of crashing.
_TRANSPORT_ERRORS = (requests.RequestException, OSError, Web3Exception, ValueError)


def _rpc(method: Callable[P, R]) -> Callable[P, R]:
    """Report any transport failure inside ``method`` as :class:`L1Error` (a one-line
    reason); L1Error and LocalError raised by the method itself pass through."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (L1Error, LocalError):
            raise
        except _TRANSPORT_ERRORS as exc:
            raise L1Error(f"L1 unreachable: {_one_line(exc)}") from None

    return wrapper


LOG_RANGE = 5_000
"""Most blocks one log query covers (public RPC providers cap the range)."""

_MASK64 = (1 << 64) - 1
_MASK96 = (1 << 96) - 1
_MASK248 = (1 << 248) - 1
#: The longest challenge window the adjudicator takes (deadlines then fit in 64 bits).
MAX_WINDOW = (1 << 32) - 1
_FORCED_PHASE = 6
_FORCED_TYPES = ["uint64", "uint64", "uint96", "bytes32", "bytes32"]
_ZERO_ADDRESS = "0x" + "00" * 20
_ZERO_WORD = bytes(32)
#: Where the app's rules contract is in :func:`params_tuple`.
RULES: Final = 6
_WATCH_REFUSED = "a unilateral close must reveal the channel's watch secret"
_PHASES = {
    1: L1ChannelStatus.FUNDING,
    2: L1ChannelStatus.OPEN,
    3: L1ChannelStatus.CLOSING,
    4: L1ChannelStatus.SETTLED,
    5: L1ChannelStatus.CANCELLED,
}
_FUNDED = (L1ChannelStatus.FUNDING, L1ChannelStatus.OPEN)
_EVENT_KINDS = {
    "Opened": L1EventKind.OPENED,
    "Deposited": L1EventKind.DEPOSITED,
    "ClosingStarted": L1EventKind.CLOSING_STARTED,
    "Refuted": L1EventKind.REFUTED,
    "Settled": L1EventKind.SETTLED,
    "Cancelled": L1EventKind.CANCELLED,
    "ForceMoved": L1EventKind.FORCE_MOVED,
}


@functools.cache
def _rules_of(app: str, version: int) -> bytes | None:
    """The rules contract's address of an app on every chain, or None (no rules, or the
    app is not installed here, or in another version)."""
    from bfs_smr.adapters.evm.deploy import rules_address

    try:
        instance = load_app(app, version)
    except LocalError:
        return None
    return rules_address(instance)


def params_tuple(params: ChannelParams) -> tuple[bytes, str, str, int, int, int, str, bytes]:
    """The adjudicator's ``Params`` struct for ``params`` (checks what fits on chain).

    Its ``rules`` field (index :data:`RULES`) is the app's rules contract (the zero address
    for an app without one), found from the app's code alone, so both parties name the
    same channel key; its last, ``watch``, is ``ChannelParams.watch`` (32 zero bytes for a
    channel that commits to no watch secret).
    """
    a, b = params.participants
    if len(a) != 20 or len(b) != 20:
        raise LocalError("EVM participants are 20-byte addresses")
    if max(params.deposits) > _MASK96:
        raise LocalError("a deposit must fit in 96 bits")
    if params.challenge_window > MAX_WINDOW:
        raise LocalError(
            f"the challenge window must be at most {MAX_WINDOW} seconds on the EVM "
            f"(got {params.challenge_window})"
        )
    rules = _rules_of(params.app, params.app_version)
    return (
        params.channel_id,
        to_checksum_address(a),
        to_checksum_address(b),
        params.deposits[0],
        params.deposits[1],
        params.challenge_window,
        _ZERO_ADDRESS if rules is None else to_checksum_address(rules),
        params.watch or _ZERO_WORD,
    )


def channel_key(params: ChannelParams) -> bytes:
    """The storage key the adjudicator keeps ``params``' channel under."""
    types = ["bytes32", "address", "address", "uint256", "uint256", "uint256", "address"]
    return keccak(abi_encode([*types, "bytes32"], list(params_tuple(params))))


def sig_tuple(signature: bytes | None) -> tuple[int, bytes, bytes]:
    """A 65-byte ``r ‖ s ‖ v`` signature as the adjudicator's ``Sig`` struct ``(v, r, s)``."""
    if signature is None or len(signature) != 65:
        raise L1Error("update is not signed by both participants")
    return (signature[64], signature[:32], signature[32:64])


def _check_fits(u: Update) -> None:
    if u.seq > _MASK64 or max(u.outcome) > _MASK96:
        raise L1Error("update does not fit on chain (seq or outcome too large)")


def state_tuple(signed: SignedUpdate) -> tuple[int, int, int, bool, bytes]:
    """The adjudicator's ``State`` struct for an update."""
    u = signed.update
    _check_fits(u)
    return (u.seq, u.outcome[0], u.outcome[1], u.final, binding(u.state_hash, u.entry_hash()))


@dataclass(frozen=True, slots=True)
class DecodedSlot:
    """One channel's storage slot, unpacked."""

    status: L1ChannelStatus | None
    deposited: tuple[int, int] = (0, 0)
    seq: int | None = None
    deadline: int | None = None
    out_a: int | None = None
    payouts: tuple[int, int] | None = None
    forced: bool = False


def decode_slot(slot: int) -> DecodedSlot:
    """Unpack a channel slot (layout in ``Adjudicator.vy``)."""
    phase = slot & 0xFF
    status = _PHASES.get(phase)
    if status in (L1ChannelStatus.FUNDING, L1ChannelStatus.OPEN):
        return DecodedSlot(status, deposited=((slot >> 8) & _MASK96, (slot >> 104) & _MASK96))
    if status is L1ChannelStatus.CLOSING:
        return DecodedSlot(
            status,
            seq=(slot >> 8) & _MASK64,
            deadline=(slot >> 72) & _MASK64,
            out_a=(slot >> 136) & _MASK96,
        )
    if status is L1ChannelStatus.SETTLED:
        return DecodedSlot(status, payouts=((slot >> 8) & _MASK96, (slot >> 104) & _MASK96))
    if phase == _FORCED_PHASE:  # closing on a forced move: the fields are in its event
        return DecodedSlot(L1ChannelStatus.CLOSING, forced=True)
    return DecodedSlot(status)


@dataclass(frozen=True, slots=True)
class ForcedRecord:
    """A move forced on chain, as its event tells it: the fields the adjudicator keeps a
    commitment to (later calls repeat them), and the update it registered."""

    seq: int
    deadline: int
    out_a: int
    state_hash: bytes
    entry_hash: bytes
    update: SignedUpdate | None

    def fields(self) -> tuple[int, int, int, bytes, bytes]:
        """The adjudicator's ``Forced`` struct."""
        return (self.seq, self.deadline, self.out_a, self.state_hash, self.entry_hash)

    def commitment(self) -> int:
        """The slot a channel with this forced move registered holds."""
        digest = keccak(abi_encode(_FORCED_TYPES, list(self.fields())))
        return _FORCED_PHASE | ((int.from_bytes(digest, "big") & _MASK248) << 8)


class EvmAdapter(L1Adapter):
    """One party's client of a deployed adjudicator, transacting as its secp256k1 key.

    The party's key is both its channel signing key and its Ethereum account, so its
    identity in :class:`bfs_smr.ChannelParams` is its address. The adjudicator keeps a
    channel under a hash of its parameters, so every transaction names them: the adapter
    learns them in :meth:`open`, and a party that did not open must be told with
    :meth:`track` before it deposits, closes or asks about the channel.

    Args:
        w3: a connected web3 client.
        contract: the adjudicator's address (20 bytes).
        secret: the party's 32-byte secp256k1 key.
        timeout: seconds to wait for a receipt. A mined receipt counts as final: reorgs
            are not handled.
        from_block: the first block whose logs :meth:`events` reads. Default: the block
            the adjudicator was deployed in (see :func:`~bfs_smr.adapters.evm.deployment_block`),
            read in ranges of :data:`LOG_RANGE` blocks.
    """

    supports_force_move = True
    format: EvmFormat

    def __init__(
        self,
        w3: Web3,
        contract: bytes,
        secret: bytes,
        *,
        timeout: float = 120.0,
        from_block: int | None = None,
    ) -> None:
        from bfs_smr.adapters.evm.artifact import load_artifact

        self.w3 = w3
        self.chain_id = int(w3.eth.chain_id)
        self.format = EvmFormat(self.chain_id, bytes(contract))
        self.contract: Contract = w3.eth.contract(
            address=to_checksum_address(contract), abi=load_artifact()["abi"]
        )
        self._secret = bytes(secret)
        self._account = Secp256k1().public_key(self._secret)
        self._address = to_checksum_address(self._account)
        self._timeout = timeout
        self._params: dict[bytes, ChannelParams] = {}
        self._events: list[L1Event] = []
        # The last block whose logs are in _events; None: find the deployment block first.
        self._scanned: int | None = None if from_block is None else from_block - 1
        self._block_times: dict[int, int] = {}
        # the newest ForceMoved event of each channel key (its fields and block time),
        # kept whether or not the channel is tracked yet: rebuilt once its params are known
        self._forced: dict[bytes, tuple[Any, int]] = {}
        #: Wei this adapter spent on transaction fees.
        self.fees_paid = 0
        #: Receipts of every transaction this adapter sent, oldest first.
        self.receipts: list[TxReceipt] = []

    def __repr__(self) -> str:  # never the secret
        return f"EvmAdapter(account={self._address}, contract={self.contract.address})"

    @property
    def account(self) -> bytes:
        return self._account

    # -- channels this party knows ------------------------------------------------------

    def track(self, params: ChannelParams) -> bytes:
        """Remember ``params`` so the channel can be named on chain; returns its id."""
        if params.l1 != self.format.domain:
            raise L1Error("channel parameters name another L1")
        params_tuple(params)
        self._params[params.channel_id] = params
        return params.channel_id

    def _known(self, channel_id: bytes) -> ChannelParams:
        params = self._params.get(channel_id)
        if params is None:
            raise L1Error("no such channel known to this adapter (track its params first)")
        return params

    # -- transactions -------------------------------------------------------------------

    @_rpc
    def open(self, params: ChannelParams) -> bytes:
        cid = self.track(params)
        if self._account not in params.participants:
            raise L1Error("only a participant can open the channel")
        amount = params.deposits[params.participants.index(self._account)]
        struct = params_tuple(params)
        rules = struct[RULES]
        if rules != _ZERO_ADDRESS and not self.w3.eth.get_code(to_checksum_address(rules)):
            # its moves could not be forced: a silent opponent would win the game
            raise L1Error(
                f"the rules contract of {params.app_id} is not deployed at {rules} on this "
                "chain; deploy it with: bfs-smr l1 init --l1 evm:URL"
            )
        self.send(self.contract.functions.open(struct), value=amount)
        return cid

    @_rpc
    def deposit(self, channel_id: bytes, amount: int) -> None:
        params = self._known(channel_id)
        if type(amount) is not int or amount <= 0:
            raise L1Error("deposit must be a positive amount up to what is still due")
        self.send(self.contract.functions.deposit(params_tuple(params)), value=amount)

    def _update_call(
        self, name: str, update: SignedUpdate, reveal: bytes | None = None
    ) -> ContractFunction:
        params = self._known(update.update.channel_id)
        fn = getattr(self.contract.functions, name)
        args: list[Any] = [
            params_tuple(params),
            state_tuple(update),
            sig_tuple(update.signatures[0]),
            sig_tuple(update.signatures[1]),
        ]
        if name == "unilateral_close":
            args.append(reveal if params.watch and reveal is not None else _ZERO_WORD)
        elif (forced := self._forced_now(params)) is not None:
            args.append(forced.fields())  # the forced move the channel closes on
        call: ContractFunction = fn(*args)
        return call

    def _forced_now(self, params: ChannelParams) -> ForcedRecord | None:
        """The forced move registered in the channel now, or None if none is."""
        if _rules_of(params.app, params.app_version) is None:
            return None  # without rules nothing is ever forced: no need to read the slot
        if not decode_slot(slot := self._slot(params)).forced:
            return None
        return self._forced_record(params, slot)

    def _forced_record(self, params: ChannelParams, slot: int) -> ForcedRecord:
        self.events()  # read the logs up to now
        event = self._forced.get(channel_key(params))
        record = None if event is None else _forced_from_event(params, *event)
        if record is None or record.commitment() != slot:
            raise L1Error("the registered forced move's event is not in the logs read")
        return record

    @_rpc
    def cooperative_close(self, update: SignedUpdate) -> tuple[int, int]:
        if not update.update.final:
            raise L1Error("a cooperative close needs a final update")
        self.send(self._update_call("cooperative_close", update))
        return update.update.outcome

    @_rpc
    def unilateral_close(self, update: SignedUpdate, reveal: bytes | None = None) -> int:
        """Register ``update`` (see :meth:`L1Adapter.unilateral_close`). A missing or
        wrong ``reveal`` for a channel that commits to a watch secret is refused here,
        with the adjudicator's reason, before anything is sent."""
        params = self._known(update.update.channel_id)
        if params.watch and not (
            type(reveal) is bytes
            and len(reveal) == 32
            and self.format.watch_commitment(reveal) == params.watch
        ):  # what the adjudicator would refuse, refused before any gas is spent
            raise L1Error(_WATCH_REFUSED)
        receipt = self.send(self._update_call("unilateral_close", update, reveal))
        slot = decode_slot(self._slot(params))
        if slot.status is L1ChannelStatus.SETTLED:
            return self._block_time(receipt["blockNumber"])
        assert slot.deadline is not None
        return slot.deadline

    @_rpc
    def refute(self, update: SignedUpdate) -> None:
        self.send(self._update_call("refute", update))

    @_rpc
    def cancel(self, channel_id: bytes) -> None:
        self.send(self.contract.functions.cancel(params_tuple(self._known(channel_id))))

    @_rpc
    def settle(self, channel_id: bytes) -> tuple[int, int]:
        params = self._known(channel_id)
        forced = self._forced_now(params)
        if forced is None:
            self.send(self.contract.functions.settle(params_tuple(params)))
        else:
            self.send(self.contract.functions.settle(params_tuple(params), forced.fields()))
        payouts = decode_slot(self._slot(params)).payouts
        assert payouts is not None
        return payouts

    @_rpc
    def force_move(
        self, state: bytes, update: SignedUpdate, base: SignedUpdate | None = None
    ) -> int:
        u = update.update
        params = self._known(u.channel_id)
        struct = params_tuple(params)
        if struct[RULES] == _ZERO_ADDRESS:
            raise L1Error(f"{params.app_id} has no rules contract on chain; nothing to force")
        if len(u.commands) != 1:
            raise L1Error("a force move is exactly one command by the party to move")
        entry = u.commands[0]
        signature = update.signatures[entry.actor]
        if signature is None:
            raise L1Error("a force move must be signed by the party to move")
        move = (state, entry.ref, encode(entry.command), sig_tuple(signature))
        if not self.w3.eth.get_code(to_checksum_address(struct[RULES])):
            # Anyone may deploy an app's rules at their address: a party about to lose by
            # silence does so rather than wait for `l1 init` (the key binds the address).
            self._deploy_rules(params)
        forced = self._forced_now(params)
        if forced is not None:
            call = self.contract.functions.force_next(struct, forced.fields(), move)
        else:
            if base is None or not base.doubly_signed:
                raise L1Error("a first force move on the EVM needs the registered update")
            b = base.update
            _check_fits(b)
            call = self.contract.functions.force_move(
                struct,
                (b.seq, b.outcome[0], b.outcome[1], b.state_hash, b.entry_hash()),
                sig_tuple(base.signatures[1 - entry.actor]),  # the other party's
                move,
            )
        self.send(call)
        record = self._forced_record(params, self._slot(params))
        return record.deadline

    def _deploy_rules(self, params: ChannelParams) -> None:
        from bfs_smr.adapters.evm.deploy import deploy_rules

        def send(to: str, data: bytes) -> object:
            return self._send_tx({"to": to_checksum_address(to), "data": data})

        deploy_rules(self.w3, load_app(params.app, params.app_version), send=send)

    @_rpc
    def withdraw(self) -> int:
        """Collect payouts this account refused to receive in the closing transaction."""
        owed = int(self.contract.functions.owed(self._address).call())
        self.send(self.contract.functions.withdraw())
        return owed

    def send(self, call: ContractFunction, *, value: int = 0) -> TxReceipt:
        """Sign and send ``call`` as this account; a revert raises :class:`L1Error`.

        The call is simulated first, so a transaction that would revert is never sent and
        the contract's revert reason becomes the error's message.
        """
        return self._transact(call.build_transaction, value)

    def _send_tx(self, fields: TxParams) -> TxReceipt:
        """Sign and send a plain transaction (``to``, ``data``) as this account."""

        def build(tx: TxParams) -> TxParams:
            tx.update(fields)
            tx["gasPrice"] = self.w3.eth.gas_price
            tx["gas"] = self.w3.eth.estimate_gas(tx)
            return tx

        return self._transact(build, 0)

    def _transact(self, build: Callable[[TxParams], TxParams], value: int) -> TxReceipt:
        w3 = self.w3
        try:
            have = int(w3.eth.get_balance(self._address))
            if value > have:
                raise L1Error(f"insufficient funds: {value} needed, {have} unlocked")
            tx: TxParams = {
                "from": self._address,
                "value": value,  # type: ignore[typeddict-item]
                "nonce": w3.eth.get_transaction_count(self._address, "pending"),
                "chainId": self.chain_id,
            }
            built = build(tx)
            built["gas"] = int(built["gas"]) * 5 // 4 + 10_000
            signed = Account.sign_transaction(built, self._secret)
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._timeout)
        except ContractLogicError as exc:
            raise L1Error(_revert_reason(str(exc.message or exc))) from None
        except TimeExhausted:
            raise L1Error("transaction was not mined in time") from None
        except Exception as exc:
            # eth-tester's provider raises its own TransactionFailed for a revert; nodes
            # answer a broke sender with an RPC error: both become L1 errors with a reason.
            message = str(exc)
            if "execution reverted" in message:
                raise L1Error(_revert_reason(message)) from None
            if "insufficient funds" in message.lower():
                raise L1Error(f"insufficient funds: {message}") from None
            if isinstance(exc, Web3Exception | ValueError):
                raise L1Error(f"transaction failed: {message}") from None
            if isinstance(exc, _TRANSPORT_ERRORS):
                # Once sent, the transaction may still be mined: callers read the chain
                # again before they act again.
                raise L1Error(f"L1 unreachable: {_one_line(exc)}") from None
            raise
        self.receipts.append(receipt)
        self.fees_paid += int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
        if receipt["status"] != 1:
            raise L1Error("transaction reverted")
        return receipt

    # -- reading the chain --------------------------------------------------------------

    def _slot(self, params: ChannelParams) -> int:
        return int(self.contract.functions.channels(channel_key(params)).call())

    @_rpc
    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        params = self._known(channel_id)
        raw = self._slot(params)
        slot = decode_slot(raw)
        if slot.status is None:
            raise L1Error("no such channel")
        if slot.forced:
            record = self._forced_record(params, raw)
            return L1ChannelInfo(
                channel_id=channel_id,
                status=L1ChannelStatus.CLOSING,
                locked=params.locked,
                registered_seq=record.seq,
                deadline=record.deadline,
                payouts=None,
                forced=record.update,
            )
        if slot.status in (L1ChannelStatus.FUNDING, L1ChannelStatus.OPEN):
            locked = sum(slot.deposited)
        elif slot.status is L1ChannelStatus.CLOSING:
            locked = params.locked
        else:
            locked = 0
        return L1ChannelInfo(
            channel_id=channel_id,
            status=slot.status,
            locked=locked,
            registered_seq=slot.seq,
            deadline=slot.deadline,
            payouts=slot.payouts,
            deposited=slot.deposited if slot.status in _FUNDED else None,
        )

    @_rpc
    def events(self, since: int = 0) -> list[L1Event]:
        """Every channel event of this adjudicator, from its logs.

        An event under a tracked channel id but another key (a channel someone opened with
        the same id and other parameters) is left out: it is not this party's channel.

        Events of channels this adapter does not track are reported too, under the
        ``channel_id`` the transaction named in its ``Params``. The adjudicator binds the
        parameters only through the key, so for an untracked channel that id is a claim:
        anyone can open a channel under any id with parameters of its own. A reader that
        learns the parameters later (a watchtower, once a close's ``reveal`` lets it read
        them) tracks them and asks :meth:`channel`, which reads the slot under their key;
        events read after that are filtered as above.

        The ``ClosingStarted`` event of a channel whose parameters commit to a watch secret
        carries the secret, reported as :attr:`L1Event.reveal`, tracked channel or not;
        for a channel without a commitment the log holds zero and ``reveal`` is None.
        """
        if self._scanned is None:  # nothing before the adjudicator existed
            from bfs_smr.adapters.evm.deploy import deployment_block

            self._scanned = deployment_block(self.w3, self.format.contract) - 1
        latest = int(self.w3.eth.block_number)
        while self._scanned < latest:
            # In ranges: RPC providers refuse (or time out on) a log query over many blocks.
            last = min(latest, self._scanned + LOG_RANGE)
            logs = self.w3.eth.get_logs(
                {"address": self.contract.address, "fromBlock": self._scanned + 1, "toBlock": last}
            )
            found: list[L1Event] = []  # a range is taken whole or not at all (a retry
            for log in logs:  # after a failure mid-range must not add an event twice)
                self._add_event(log, found)
            self._events.extend(found)
            self._scanned = last
        return self._events[max(since, 0) :]

    def _add_event(self, log: Any, found: list[L1Event]) -> None:
        topic = bytes(log["topics"][0]) if log["topics"] else b""
        for name, kind in _EVENT_KINDS.items():
            event = getattr(self.contract.events, name)()
            if topic != bytes.fromhex(event.topic.removeprefix("0x")):
                continue
            args = event.process_log(log)["args"]
            cid = bytes(args["channel_id"])
            params = self._params.get(cid)
            if params is not None and bytes(args["key"]) != channel_key(params):
                return
            payouts = None
            if kind is L1EventKind.SETTLED:
                payouts = (int(args["payout_a"]), int(args["payout_b"]))
            time = self._block_time(int(log["blockNumber"]))
            deadline = int(args["deadline"]) if "deadline" in args else None
            reveal = bytes(args["reveal"]) if "reveal" in args else None
            if reveal == _ZERO_WORD and (params is None or not params.watch):
                reveal = None  # the channel commits to no watch secret
            if kind is L1EventKind.FORCE_MOVED:
                deadline = None if params is None else time + params.challenge_window
                # by key: a channel forged under a tracked id has another key
                self._forced[bytes(args["key"])] = (args, time)
            found.append(
                L1Event(
                    index=len(self._events) + len(found),
                    kind=kind,
                    channel_id=cid,
                    time=time,
                    seq=int(args["seq"]) if "seq" in args else None,
                    deadline=deadline,
                    payouts=payouts,
                    reveal=reveal,
                )
            )
            return

    def _block_time(self, number: int) -> int:
        if number not in self._block_times:
            self._block_times[number] = int(self.w3.eth.get_block(number)["timestamp"])
        return self._block_times[number]

    @_rpc
    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    @_rpc
    def balance(self, account: bytes | None = None) -> int:
        who = self._account if account is None else account
        return int(self.w3.eth.get_balance(to_checksum_address(who)))


def _revert_reason(message: str) -> str:
    _, found, reason = message.partition("execution reverted")
    if found:
        message = reason.lstrip(": ")
    return message.strip() or "transaction reverted"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def forced_body(params: ChannelParams, args: Any, *, out_b: int) -> bytes:
    """The canonical body the adjudicator built for a forced update from its event's
    fields (the same bytes :meth:`Update.body` makes when the command decodes). The
    command goes in as the bytes the chain took, so even one the codec would refuse has a
    body, and the forced move can still be refuted and settled."""
    head = (params.channel_id, int(args["seq"]), bytes(args["prev_hash"]), params.app_id)
    tail = (bytes(args["state_hash"]), [int(args["out_a"]), out_b], False)
    return b"".join(
        (
            b"\x88",  # an update: an array of 8
            *map(encode, head),
            b"\x81\x83",  # one command entry: [actor, ref, command]
            encode(int(args["mover"])),
            encode(int(args["ref"])),
            bytes(args["command"]),
            *map(encode, tail),
        )
    )


def _forced_from_event(params: ChannelParams, args: Any, time: int) -> ForcedRecord:
    """Rebuild the update a force move registered from its event (the adjudicator built
    its body from the same fields, and checked the mover's signature over it; its deadline
    is the block's time plus the window).

    Its ``update`` is None if the command does not decode as the framework's canonical
    CBOR (a rules contract that accepts what its app would not): the fields still serve to
    refute and settle.
    """
    mover = int(args["mover"])
    out_a = int(args["out_a"])
    out_b = params.locked - out_a
    entry_hash = hash_bytes(forced_body(params, args, out_b=out_b))
    record = ForcedRecord(
        seq=int(args["seq"]),
        deadline=time + params.challenge_window,
        out_a=out_a,
        state_hash=bytes(args["state_hash"]),
        entry_hash=entry_hash,
        update=None,
    )
    try:
        command = decode(bytes(args["command"]))
    except CodecError:
        return record
    update = Update(
        channel_id=params.channel_id,
        seq=int(args["seq"]),
        prev_hash=bytes(args["prev_hash"]),
        app_id=params.app_id,
        commands=(CommandEntry(mover, int(args["ref"]), command),),
        state_hash=bytes(args["state_hash"]),
        outcome=(out_a, out_b),
        final=False,
    )
    if update.entry_hash() != entry_hash:
        return record
    signature = bytes(args["r"]) + bytes(args["s"]) + bytes([int(args["v"])])
    sigs = (signature, None) if mover == 0 else (None, signature)
    return dataclasses.replace(record, update=SignedUpdate(update, sigs))
