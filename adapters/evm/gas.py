"""Measure the adjudicator's gas per operation (docs/design.md §7 targets).

:func:`gas_report` deploys the committed adjudicator on a fresh chain (anvil or any
development node at ``rpc_url``, else the in-process py-evm chain), runs

* the happy path: Alice opens with her deposit, a final update paying both is closed
  cooperatively, both are paid in the closing transaction;
* the dispute path: Alice closes unilaterally with a stale update, Bob refutes with the
  newest, anyone settles after the window, both are paid in the settling transaction;
  and the same on a channel whose params commit to a watch secret, which the close reveals;
* a force move: a tic-tac-toe game is closed on L1 with Alice to move, she forces her move
  through the game's rules contract, and Bob answers with his (``force_answer``);

and returns the gas of each receipt (every figure includes the 21,000 base of its
transaction). Updates are real :class:`bfs_smr.Update` objects signed with secp256k1 in
the adjudicator's format, exactly as channel parties produce them.
"""

from __future__ import annotations

import os
from typing import Any

from bfs_smr.adapters.evm._adapter import EvmAdapter
from bfs_smr.adapters.evm._crypto import Secp256k1
from bfs_smr.adapters.evm.devchain import DevChain

from bfs_smr import ChannelParams, CommandEntry, SignedUpdate, Update, hash_bytes
from bfs_smr.plugins import load_app

__all__ = ["DISPUTE_PATH_TARGET", "FORCE_MOVE_TARGET", "HAPPY_PATH_TARGET", "gas_report"]

#: docs/design.md §7: open/deposit + cooperative close.
HAPPY_PATH_TARGET = 120_000
#: docs/design.md §7: unilateral close + refute + settle.
DISPUTE_PATH_TARGET = 160_000
#: A tic-tac-toe move forced on a registered doubly-signed update (issue 13's bound).
FORCE_MOVE_TARGET = 70_000

_ETHER = 10**18


def _update(params: ChannelParams, seq: int, outcome: tuple[int, int], final: bool) -> Update:
    state = hash_bytes(b"gas-report-state" + seq.to_bytes(8, "big"))
    return Update(
        channel_id=params.channel_id,
        seq=seq,
        prev_hash=hash_bytes(b"gas-report-prev" + seq.to_bytes(8, "big")),
        app_id=params.app_id,
        commands=(),
        state_hash=state,
        outcome=outcome,
        final=final,
    )


def _signed(adapter: EvmAdapter, secrets: tuple[bytes, bytes], update: Update) -> SignedUpdate:
    digest = adapter.format.digest(update, update.body())
    scheme = adapter.format.scheme
    return SignedUpdate(update, (scheme.sign(secrets[0], digest), scheme.sign(secrets[1], digest)))


def _game(
    adapter: EvmAdapter, secrets: tuple[bytes, bytes], params: ChannelParams, cells: list[int]
) -> tuple[list[SignedUpdate], list[Any]]:
    """The doubly-signed log of a tic-tac-toe game with ``cells`` played, and its states."""
    app, fmt = load_app(params.app), adapter.format
    states = [app.initial_state(params)]
    log: list[SignedUpdate] = []
    prev = params.genesis_hash
    for seq in range(len(cells) + 1):
        commands: tuple[CommandEntry, ...] = ()
        if seq:
            actor = app.to_move(states[-1])
            assert actor is not None
            commands = (CommandEntry(actor, seq, {"cell": cells[seq - 1]}),)
            states.append(app.apply(states[-1], commands[0].command, actor))
        update = Update(
            channel_id=params.channel_id,
            seq=seq,
            prev_hash=prev,
            app_id=params.app_id,
            commands=commands,
            state_hash=fmt.state_hash(app, states[-1]),
            outcome=app.checked_outcome(states[-1], params),
        )
        log.append(_signed(adapter, secrets, update))
        prev = update.entry_hash()
    return log, states


def _forced(
    adapter: EvmAdapter,
    secret: bytes,
    base: Update,
    state: Any,
    *,
    params: ChannelParams,
    cell: int,
) -> tuple[SignedUpdate, Any]:
    """The move ``cell`` on ``state`` (after ``base``), signed by the mover alone."""
    app, fmt = load_app(params.app), adapter.format
    actor = app.to_move(state)
    assert actor is not None
    after = app.apply(state, {"cell": cell}, actor)
    update = Update(
        channel_id=params.channel_id,
        seq=base.seq + 1,
        prev_hash=base.entry_hash(),
        app_id=params.app_id,
        commands=(CommandEntry(actor, 100 + base.seq, {"cell": cell}),),
        state_hash=fmt.state_hash(app, after),
        outcome=app.checked_outcome(after, params),
    )
    signature = fmt.scheme.sign(secret, fmt.digest(update, update.body()))
    return SignedUpdate(update, (signature, None) if actor == 0 else (None, signature)), after


def _gas(adapter: EvmAdapter) -> int:
    return int(adapter.receipts[-1]["gasUsed"])


def gas_report(rpc_url: str | None = None) -> dict[str, int]:
    """Gas per adjudicator operation, measured from receipts.

    Args:
        rpc_url: a development node with an unlocked funded first account (anvil);
            ``None`` for the in-process py-evm chain.

    Returns:
        ``deploy``, ``open``, ``cooperative_close``, ``unilateral_close``, ``refute``,
        ``settle``, ``happy_path_total`` (open + cooperative close),
        ``dispute_path_total`` (unilateral close + refute + settle), the same four with
        ``_watched`` (``unilateral_close_watched`` … ``dispute_path_watched_total``) on a
        channel that commits to a watch secret, its close revealing it, ``force_move`` (a
        tic-tac-toe move forced on a registered doubly-signed update) and
        ``force_answer`` (the next move forced on that forced one).
    """
    chain = DevChain.rpc(rpc_url) if rpc_url else DevChain.embedded()
    scheme = Secp256k1()
    secrets = (os.urandom(32), os.urandom(32))
    alice, bob = (chain.adapter(s) for s in secrets)
    for party in (alice, bob):  # gas money; both accounts exist, as real parties' do
        chain.mint(party.account, _ETHER)
    participants = (scheme.public_key(secrets[0]), scheme.public_key(secrets[1]))
    deposit = _ETHER // 10

    def params(nonce: int, window: int, watch: bytes = b"") -> ChannelParams:
        return ChannelParams(
            l1=alice.format.domain,
            participants=participants,
            deposits=(deposit, 0),
            app="payments",
            app_version=1,
            nonce=nonce,
            challenge_window=window,
            watch=watch,
        )

    report = {"deploy": int(chain.deploy_receipt["gasUsed"])}

    # happy path
    happy = params(0, 3_600)
    bob.track(happy)
    alice.open(happy)
    report["open"] = _gas(alice)
    final = _signed(alice, secrets, _update(happy, 7, (deposit - 1234, 1234), True))
    bob.cooperative_close(final)
    report["cooperative_close"] = _gas(bob)

    # dispute path, on a channel without a watch secret and on one with
    window = 60
    for nonce, suffix, secret in ((1, "", None), (3, "_watched", os.urandom(32))):
        watch = b"" if secret is None else alice.format.watch_commitment(secret)
        dispute = params(nonce, window, watch)
        bob.track(dispute)
        alice.open(dispute)
        stale = _signed(alice, secrets, _update(dispute, 3, (deposit - 100, 100), False))
        newest = _signed(alice, secrets, _update(dispute, 4, (deposit - 500, 500), False))
        alice.unilateral_close(stale, secret)
        report["unilateral_close" + suffix] = _gas(alice)
        bob.refute(newest)
        report["refute" + suffix] = _gas(bob)
        chain.advance(window)
        bob.settle(dispute.channel_id)
        report["settle" + suffix] = _gas(bob)

    # force moves: X (Alice) to move in a game closed on L1
    game = ChannelParams(
        l1=alice.format.domain,
        participants=participants,
        deposits=(deposit, deposit),
        app="tictactoe",
        app_version=1,
        nonce=2,
        challenge_window=window,
    )
    bob.track(game)
    alice.open(game)
    bob.deposit(game.channel_id, deposit)
    log, states = _game(alice, secrets, game, [4, 0])
    alice.unilateral_close(log[-1])
    fmt, app = alice.format, load_app("tictactoe")
    move, after = _forced(alice, secrets[0], log[-1].update, states[-1], params=game, cell=8)
    alice.force_move(fmt.encode_state(app, states[-1]), move, log[-1])
    report["force_move"] = _gas(alice)
    answer, _ = _forced(bob, secrets[1], move.update, after, params=game, cell=2)
    bob.force_move(fmt.encode_state(app, after), answer, move)
    report["force_answer"] = _gas(bob)

    report["happy_path_total"] = report["open"] + report["cooperative_close"]
    for suffix in ("", "_watched"):
        report[f"dispute_path{suffix}_total"] = sum(
            report[step + suffix] for step in ("unilateral_close", "refute", "settle")
        )
    return report
