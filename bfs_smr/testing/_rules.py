"""``check_app_rules``: the twin kit, an app's Python rules against its EVM rules contract.

A move forced on the EVM is judged by the app's rules contract, while the parties judge
every other move with the Python app. The two must be twins: whatever one accepts the
other accepts, with the same next state, player to move, finality and outcome, or a
party could be made to lose on chain by a move its own node refuses (docs/design.md §5,
docs/writing-an-app.md). The kit deploys the contract on the in-process py-evm chain and
runs generated command sequences, valid and hostile, through both.

Needs the ``evm`` extra (web3, eth-tester, eth-abi): the EVM imports are made inside the
functions, so importing :mod:`bfs_smr.testing` does not load them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._codec import decode, encode
from bfs_smr._errors import CodecError, CommandRejected
from bfs_smr._update import ChannelParams
from bfs_smr.testing._app import HOSTILE_COMMANDS

__all__ = ["RULES_ABI", "check_app_rules"]

#: What a rules contract must offer: name → (argument types, return types). ``state`` is
#: the ABI encoding of ``app.state_abi``, ``command`` the command's canonical CBOR.
RULES_ABI: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "app_id": ((), ("string",)),
    "to_move": (("bytes",), ("uint256",)),
    "is_final": (("bytes",), ("bool",)),
    "outcome": (("bytes",), ("uint256", "uint256")),
    "apply": (("bytes", "bytes", "uint256"), ("bytes",)),
    "force": (("bytes", "bytes"), ("uint256", "bytes", "uint256", "uint256")),
}

_REJECT = "reject"  # what either side answers for a refused command or state

#: A generator of candidate moves: given the state and the kit's random source, the
#: ``(actor, command)`` pairs to try in order (the first one the app accepts is played).
Moves = Callable[[Any, random.Random], Iterable[tuple[int, Any]]]


def check_app_rules(
    app: StateMachine[Any],
    params: ChannelParams,
    *,
    commands: Sequence[Any] = (),
    moves: Moves | None = None,
    hostile: Iterable[Any] = (),
    examples: int = 10,
    max_steps: int = 64,
    probes: int = 4,
    seed: int = 0,
    artifact: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Check that ``app``'s EVM rules contract is the twin of its Python rules.

    Deploys the contract (``artifact``, by default the app's own through
    ``app.l1_rules["evm"]``) on a fresh in-process py-evm chain, then plays ``examples``
    command sequences from ``app.initial_state(params)``, each until a final state, a
    state where no candidate move is accepted, or ``max_steps`` moves. At every state
    reached it compares, between the Python app and the contract:

    * ``to_move`` (the contract answers 2 where Python answers ``None``), ``is_final``,
      ``outcome``, and ``app_id`` once;
    * for every candidate move and ``probes`` hostile commands: ``apply(state, command,
      actor)`` accepts or rejects alike, and an accepted command's next state is, byte
      for byte, ``EvmFormat.encode_state(app, python_next)``; ``force(state, command)``
      plays the command as the party to move and returns that party, the same next
      state and its outcome, or reverts where Python has nobody to move or rejects;
    * at the first state of each sequence and about a third of the others, an encoding
      of the state that is not canonical for ``app.state_abi`` (a padding byte set,
      bytes cut or added): every function must revert on it.

    Hostile commands are drawn from :data:`~bfs_smr.testing.HOSTILE_COMMANDS` plus
    ``hostile``, random CBOR values, byte-level mutations of valid encodings (a byte
    changed, cut, added), the same values encoded non-canonically (long heads,
    indefinite lengths: Python's strict decoder refuses them, so the contract must
    too), and valid commands sent by the wrong party. Python accepts command bytes if
    :func:`bfs_smr.decode` accepts them and the app applies the value.

    Args:
        app: the app under test; it must declare ``state_abi``.
        params: the channel parameters its initial state is made from.
        commands: the app's commands (values, e.g. ``{"cell": 4}``); the default move
            generator tries them in random order, by the party to move (by either party
            if the app has no turns).
        moves: a generator of candidate moves ``(state, rng) -> [(actor, command), …]``
            to use instead of ``commands``.
        hostile: the app's own malformed commands, added to the generic ones.
        examples: how many sequences to play.
        max_steps: the longest sequence.
        probes: hostile commands tried at each state.
        seed: the random source's seed: a failure replays with the same seed.
        artifact: a compiled contract (``abi``, ``bytecode``) to check instead of the
            app's own.

    Returns:
        Counts of what was compared: ``sequences``, ``states``, ``commands`` (command
        probes, each through ``apply`` and ``force``) and ``calls`` (contract calls).

    Raises:
        AssertionError: the first disagreement, naming the sequence, the step, the
            function, the command (value and bytes), the actor and both answers.
    """
    from bfs_smr.adapters.evm import EvmFormat
    from bfs_smr.adapters.evm.artifact import load_rules_artifact

    if app.state_abi is None:
        raise AssertionError(f"{app.app_id}: declares no state_abi, so it has no rules on chain")
    if artifact is None:
        artifact = load_rules_artifact(app)
        if artifact is None:
            raise AssertionError(f"{app.app_id}: names no EVM rules contract (l1_rules['evm'])")
    if moves is None and not commands:
        raise ValueError("give the app's commands, or a moves generator")
    rules = _Rules(artifact)
    fmt = EvmFormat(1, bytes(20))  # the encoding of a state depends on no chain
    twin = _Twin(app, fmt, rules)
    rng = random.Random(seed)
    pool = (*HOSTILE_COMMANDS, *hostile)
    gen: Moves = moves if moves is not None else _default_moves(app, list(commands))

    got = rules.call("app_id")
    if got != (app.app_id,):
        raise AssertionError(f"app_id: Python {app.app_id!r}, contract {got!r}")
    counts = {"sequences": 0, "states": 0, "commands": 0}
    for example in range(examples):
        counts["sequences"] += 1
        state = app.initial_state(params)
        for step in range(max_steps + 1):
            where = f"sequence {example} (seed {seed}), step {step}"
            counts["states"] += 1
            twin.check_state(where, state)
            if step == 0 or rng.random() < 0.3:
                twin.check_bad_encodings(where, state, rng)
            played = None
            valid: list[tuple[int, Any]] = []
            for actor, command in gen(state, rng):
                counts["commands"] += 1
                after = twin.check_command(where, state, actor, _encode(command), command)
                if after is not None:
                    valid.append((actor, command))
                    played = after
                    break
            for actor, data, shown in _hostile(rng, pool, valid, probes):
                counts["commands"] += 1
                twin.check_command(where, state, actor, data, shown)
            if played is None or step == max_steps:
                break
            state = played
    counts["calls"] = rules.calls
    return counts


def _encode(command: Any) -> bytes:
    try:
        return encode(command)
    except CodecError as exc:
        raise AssertionError(f"command {command!r} has no canonical encoding: {exc}") from None


def _default_moves(app: StateMachine[Any], commands: list[Any]) -> Moves:
    def moves(state: Any, rng: random.Random) -> list[tuple[int, Any]]:
        mover = app.to_move(state)
        actors = (0, 1) if mover is None else (mover,)
        tries = [(a, c) for a in actors for c in commands]
        rng.shuffle(tries)
        return tries

    return moves


# -- hostile commands ---------------------------------------------------------------------


def _hostile(
    rng: random.Random, pool: Sequence[Any], valid: list[tuple[int, Any]], n: int
) -> list[tuple[int, bytes, Any]]:
    """``n`` hostile ``(actor, bytes, what to show)`` probes."""
    out: list[tuple[int, bytes, Any]] = []
    for _ in range(n):
        kind = rng.randrange(5)
        actor = rng.randrange(2)
        if valid and kind == 0:  # a valid command, by the other party
            a, c = valid[0]
            out.append((1 - a, _encode(c), c))
        elif valid and kind == 1:  # a valid encoding, one byte changed, cut or added
            a, c = valid[0]
            data = _mutate(rng, _encode(c))
            out.append((a, data, f"<mutated {c!r}>"))
        elif valid and kind == 2:  # a valid command, encoded non-canonically
            a, c = valid[0]
            data = _loose(rng, c)
            out.append((a, data, f"<non-canonical {c!r}>"))
        elif kind == 3:
            value = _random_value(rng, 3)
            out.append((actor, _encode(value), value))
        else:
            value = rng.choice(pool)
            out.append((actor, _encode(value), value))
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    how = rng.randrange(4)
    i = rng.randrange(len(b) + 1)
    if how == 0 and b:  # change one byte
        i = min(i, len(b) - 1)
        b[i] = (b[i] + rng.randrange(1, 256)) % 256
    elif how == 1 and b:  # cut one byte
        del b[min(i, len(b) - 1)]
    elif how == 2:  # add one byte
        b.insert(i, rng.randrange(256))
    else:  # add bytes at the end
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
    return bytes(b)


def _head(rng: random.Random, major: int, n: int, loose: bool) -> bytes:
    """A CBOR head, the shortest (canonical) unless ``loose`` picks a longer one."""
    sizes = [s for s in (0, 1, 2, 4, 8) if (n < 24 if s == 0 else n < 1 << (8 * s))]
    size = rng.choice(sizes[1:] or sizes) if loose else sizes[0]
    if size == 0:
        return bytes([major << 5 | n])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[size]
    return bytes([major << 5 | info]) + n.to_bytes(size, "big")


def _loose(rng: random.Random, value: Any) -> bytes:
    """``value`` encoded with at least one non-canonical head or indefinite length."""
    for _ in range(8):
        data = _loose_item(rng, value)
        if data != encode(value):
            return data
    return _encode(value) + b"\x00"  # nothing to loosen (a tiny value): trailing bytes


def _loose_item(rng: random.Random, value: Any) -> bytes:
    loose = rng.random() < 0.5
    if type(value) is int:
        return _head(rng, 0, value, loose) if value >= 0 else _head(rng, 1, -1 - value, loose)
    if type(value) is str:
        raw = value.encode()
        return _head(rng, 3, len(raw), loose) + raw
    if type(value) is bytes:
        return _head(rng, 2, len(value), loose) + value
    if type(value) in (list, tuple):
        items = b"".join(_loose_item(rng, v) for v in value)
        if rng.random() < 0.2:
            return b"\x9f" + items + b"\xff"
        return _head(rng, 4, len(value), loose) + items
    if type(value) is dict:
        items = b"".join(_loose_item(rng, k) + _loose_item(rng, v) for k, v in value.items())
        if rng.random() < 0.2:
            return b"\xbf" + items + b"\xff"
        return _head(rng, 5, len(value), loose) + items
    return encode(value)


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth > 0 else 5)
    if kind == 0:
        return rng.choice([0, 1, 8, 9, 23, 24, 255, 256, -1, 2**63, 2**64 - 1, -(2**64)])
    if kind == 1:
        return rng.choice(["", "cell", "x", "é"])
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return rng.randrange(-300, 300)
    if kind in (5, 6):
        keys = ["cell", "x", "", 0, 1]
        return {rng.choice(keys): _random_value(rng, depth - 1) for _ in range(rng.randrange(3))}
    return [_random_value(rng, depth - 1) for _ in range(rng.randrange(3))]


# -- the two twins ------------------------------------------------------------------------


class _Rules:
    """The rules contract, deployed on a fresh in-process chain, called without web3's
    per-call overhead (eth-tester's ``call`` directly)."""

    def __init__(self, artifact: dict[str, Any]) -> None:
        from eth.vm.message import Message
        from eth_typing import Address
        from eth_utils.crypto import keccak

        from bfs_smr.adapters.evm import DevChain

        abi = {f["name"]: f for f in artifact["abi"] if f.get("type") == "function"}
        for name, (args, rets) in RULES_ABI.items():
            f = abi.get(name)
            have = (
                None
                if f is None
                else (
                    tuple(i["type"] for i in f["inputs"]),
                    tuple(o["type"] for o in f["outputs"]),
                )
            )
            if have != (args, rets):
                raise AssertionError(
                    f"the rules contract lacks {name}({', '.join(args)}) -> "
                    f"({', '.join(rets)}): its ABI has {have}"
                )
        self.selectors = {
            name: keccak(f"{name}({','.join(args)})".encode())[:4]
            for name, (args, _) in RULES_ABI.items()
        }
        chain = DevChain.embedded(rules=False)
        w3 = chain.w3
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(
            factory.constructor().transact({"from": chain.faucet})
        )
        deployed = receipt["contractAddress"]
        if receipt["status"] != 1 or deployed is None:
            raise AssertionError("the rules contract does not deploy")
        # Calls run as messages on one py-evm state, reverted after each: half the time
        # of eth-tester's eth_call, which rebuilds the state for every call.
        tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self.state = tester.backend.chain.get_vm().state
        self.address = Address(bytes.fromhex(deployed[2:]))
        self.sender = Address(bytes.fromhex(chain.faucet[2:]))
        self.code = self.state.get_code(self.address)
        self.message = Message
        self.context = self.state.get_transaction_context_class()
        self.memo: dict[tuple[str, tuple[Any, ...]], Any] = {}
        self.calls = 0

    def call(self, name: str, *args: Any) -> Any:
        """The decoded return values, or ``("reject", reason)`` if the call reverts."""
        from eth_abi.abi import decode as abi_decode
        from eth_abi.abi import encode as abi_encode

        key = (name, args)
        if key in self.memo:
            return self.memo[key]
        types, rets = RULES_ABI[name]
        data = self.selectors[name] + abi_encode(list(types), list(args))
        self.calls += 1
        message = self.message(
            gas=_GAS, to=self.address, sender=self.sender, value=0, data=data, code=self.code
        )
        context = self.context(gas_price=0, origin=self.sender)
        snapshot = self.state.snapshot()
        try:
            computation = self.state.computation_class.apply_message(self.state, message, context)
        finally:
            self.state.revert(snapshot)
        raw = bytes(computation.output)
        if computation.is_error:
            result: Any = (_REJECT, _reason(raw) or str(computation.error))
        else:
            try:
                result = tuple(abi_decode(list(rets), raw, strict=True))
            except Exception as exc:  # noqa: BLE001 - any undecodable answer is the finding
                result = ("undecodable", f"{type(exc).__name__}: {exc}; 0x{raw.hex()}")
        self.memo[key] = result
        return result


_GAS = 10_000_000
_ERROR = bytes.fromhex("08c379a0")  # Error(string)


def _reason(output: bytes) -> str | None:
    from eth_abi.abi import decode as abi_decode

    if output[:4] != _ERROR:
        return None
    try:
        return str(abi_decode(["string"], output[4:])[0])
    except Exception:  # noqa: BLE001 - a garbled reason is still a revert
        return None


class _Twin:
    """Asks both twins and compares."""

    def __init__(self, app: StateMachine[Any], fmt: Any, rules: _Rules) -> None:
        self.app, self.fmt, self.rules = app, fmt, rules

    def encode(self, where: str, state: Any) -> bytes:
        try:
            data: bytes = self.fmt.encode_state(self.app, state)
        except Exception as exc:  # noqa: BLE001 - an app bug, reported as the finding
            raise AssertionError(
                f"{where}: state {state!r} has no ABI encoding as {self.app.state_abi}: {exc}"
            ) from None
        return data

    def agree(
        self, where: str, what: str, python: Any, contract: Any, state: Any, *, raw: Any = None
    ) -> None:
        """``raw``: the contract's answer as it came (a revert with its reason), if
        ``contract`` is a normalised form of it."""
        if python != contract:
            shown = contract if raw is None else raw
            raise AssertionError(
                f"{self.app.app_id} rules disagree at {where}, {what}:\n"
                f"  Python:   {self.show(python)}\n  contract: {self.show(shown)}\n"
                f"  state: {state!r}"
            )

    def show(self, answer: Any) -> str:
        """An answer for a person: an encoded state as the value it encodes."""
        from eth_abi.abi import decode as abi_decode

        if isinstance(answer, tuple):
            return "(" + ", ".join(self.show(a) for a in answer) + ")"
        if isinstance(answer, bytes):
            try:
                (value,) = abi_decode([self.app.state_abi or "bytes"], answer, strict=True)
            except Exception:  # noqa: BLE001 - not a state: show the bytes
                return f"0x{answer.hex()}"
            return f"state {value!r}"
        return repr(answer)

    def check_state(self, where: str, state: Any) -> None:
        app, enc = self.app, self.encode(where, state)
        mover = app.to_move(state)
        py_mover = (2 if mover is None else mover,)
        self.agree(where, "to_move", py_mover, self.rules.call("to_move", enc), state)
        final = (app.is_final(state),)
        self.agree(where, "is_final", final, self.rules.call("is_final", enc), state)
        out = tuple(app.outcome(state))
        self.agree(where, "outcome", out, self.rules.call("outcome", enc), state)

    def python_apply(self, state: Any, data: bytes, actor: int) -> Any:
        """The next state, or ``None`` if Python refuses the bytes."""
        try:
            value = decode(data)
        except CodecError:
            return None
        try:
            return self.app.apply(state, value, actor)
        except CommandRejected:
            return None

    def check_command(
        self, where: str, state: Any, actor: int, data: bytes, shown: Any
    ) -> Any | None:
        """Compare ``apply`` and ``force`` on one command; Python's next state or ``None``."""
        app, enc = self.app, self.encode(where, state)
        what = f"command {shown!r} (0x{data.hex()}) by {actor}"
        after = self.python_apply(state, data, actor)
        py = _REJECT if after is None else self.encode(where, after)
        got = self.rules.call("apply", enc, data, actor)
        evm = _REJECT if got[0] == _REJECT else got[0] if len(got) == 1 else got
        self.agree(where, f"apply, {what}", py, evm, state, raw=got)
        # force: the party to move plays it
        mover = app.to_move(state)
        if mover is None or mover != actor:
            forced = None if mover is None else self.python_apply(state, data, mover)
        else:
            forced = after
        if forced is None:
            py_force: Any = _REJECT
        else:
            py_force = (mover, self.encode(where, forced), *app.outcome(forced))
        got = self.rules.call("force", enc, data)
        evm_force = _REJECT if got[0] == _REJECT else got
        what = f"force, command {shown!r} (0x{data.hex()})"
        self.agree(where, what, py_force, evm_force, state, raw=got)
        return after

    def check_bad_encodings(self, where: str, state: Any, rng: random.Random) -> None:
        """Bytes that are not the canonical ABI encoding of any state: every call reverts."""
        from eth_abi.abi import decode as abi_decode
        from eth_abi.abi import encode as abi_encode
        from eth_abi.exceptions import DecodingError

        enc = self.encode(where, state)
        abi = self.app.state_abi
        assert abi is not None
        bad = []
        for _ in range(8):
            b = bytearray(enc)
            how = rng.randrange(3)
            if how == 0:  # a byte set in the high bytes of a word (padding, for small types)
                word = rng.randrange(len(b) // 32)
                b[word * 32 + rng.randrange(8)] = rng.randrange(1, 256)
            elif how == 1:
                del b[rng.randrange(len(b)) :]
            else:
                b += bytes(rng.randrange(1, 33))
            data = bytes(b)
            try:
                canonical = abi_encode([abi], abi_decode([abi], data, strict=True)) == data
            except DecodingError:
                canonical = False
            if not canonical:
                bad.append(data)
            if bad:
                break
        probe = rng.choice([b"\x00", encode(None), b""])
        for data in bad:
            for name, args in (
                ("to_move", (data,)),
                ("is_final", (data,)),
                ("outcome", (data,)),
                ("apply", (data, probe, 0)),
                ("force", (data, probe)),
            ):
                got = self.rules.call(name, *args)
                if got[0] != _REJECT:
                    raise AssertionError(
                        f"{self.app.app_id} rules accept a non-canonical state at {where}: "
                        f"{name}(0x{data.hex()}) returned {got!r}; state {state!r}"
                    )
