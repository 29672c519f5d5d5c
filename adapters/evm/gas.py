"""Measure the adjudicator's gas per operation (docs/design.md §7 targets).

:func:`gas_report` deploys the committed adjudicator on a fresh chain (anvil or any
development node at ``rpc_url``, else the in-process py-evm chain), runs

* the happy path: Alice opens with her deposit, a final update paying both is closed
  cooperatively, both are paid in the closing transaction;
* the dispute path: Alice closes unilaterally with a stale update, Bob refutes with the
  newest, anyone settles after the window, both are paid in the settling transaction;

and returns the gas of each receipt (every figure includes the 21,000 base of its
transaction). Updates are real :class:`bfs_smr.Update` objects signed with secp256k1 in
the adjudicator's format, exactly as channel parties produce them.
"""

from __future__ import annotations

import os

from bfs_smr.adapters.evm._adapter import EvmAdapter
from bfs_smr.adapters.evm._crypto import Secp256k1
from bfs_smr.adapters.evm.devchain import DevChain

from bfs_smr import ChannelParams, SignedUpdate, Update, hash_bytes

__all__ = ["DISPUTE_PATH_TARGET", "HAPPY_PATH_TARGET", "gas_report"]

#: docs/design.md §7: open/deposit + cooperative close.
HAPPY_PATH_TARGET = 120_000
#: docs/design.md §7: unilateral close + refute + settle.
DISPUTE_PATH_TARGET = 160_000

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


def _gas(adapter: EvmAdapter) -> int:
    return int(adapter.receipts[-1]["gasUsed"])


def gas_report(rpc_url: str | None = None) -> dict[str, int]:
    """Gas per adjudicator operation, measured from receipts.

    Args:
        rpc_url: a development node with an unlocked funded first account (anvil);
            ``None`` for the in-process py-evm chain.

    Returns:
        ``deploy``, ``open``, ``cooperative_close``, ``unilateral_close``, ``refute``,
        ``settle``, ``happy_path_total`` (open + cooperative close) and
        ``dispute_path_total`` (unilateral close + refute + settle).
    """
    chain = DevChain.rpc(rpc_url) if rpc_url else DevChain.embedded()
    scheme = Secp256k1()
    secrets = (os.urandom(32), os.urandom(32))
    alice, bob = (chain.adapter(s) for s in secrets)
    for party in (alice, bob):  # gas money; both accounts exist, as real parties' do
        chain.mint(party.account, _ETHER)
    participants = (scheme.public_key(secrets[0]), scheme.public_key(secrets[1]))
    deposit = _ETHER // 10

    def params(nonce: int, window: int) -> ChannelParams:
        return ChannelParams(
            l1=alice.format.domain,
            participants=participants,
            deposits=(deposit, 0),
            app="payments",
            app_version=1,
            nonce=nonce,
            challenge_window=window,
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

    # dispute path
    window = 60
    dispute = params(1, window)
    bob.track(dispute)
    alice.open(dispute)
    stale = _signed(alice, secrets, _update(dispute, 3, (deposit - 100, 100), False))
    newest = _signed(alice, secrets, _update(dispute, 4, (deposit - 500, 500), False))
    alice.unilateral_close(stale)
    report["unilateral_close"] = _gas(alice)
    bob.refute(newest)
    report["refute"] = _gas(bob)
    chain.advance(window)
    bob.settle(dispute.channel_id)
    report["settle"] = _gas(bob)

    report["happy_path_total"] = report["open"] + report["cooperative_close"]
    report["dispute_path_total"] = report["unilateral_close"] + report["refute"] + report["settle"]
    return report
