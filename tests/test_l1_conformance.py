"""The L1 conformance kit (``bfs_smr.testing.check_l1_adapter``) on every bundled L1,
and on L1s broken on purpose, which it must catch naming the rule they break.

Every rule runs as its own test against the embedded L1, the local L1 on a SQLite file
(a connection per party, the clock moved by the harness), the Vyper adjudicator on the
in-process py-evm chain, and the same adjudicator on an anvil node installed from npm.
The bundled adapters word their refusals alike, so they run with ``check_reasons``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.memory import ChannelRecord, MemoryL1

from bfs_smr import L1ChannelStatus, L1Error, L1EventKind, LocalError, SignedUpdate
from bfs_smr.testing import (
    L1_RULES,
    EvmL1Harness,
    L1Harness,
    L1RuleBroken,
    LocalL1Harness,
    MemoryL1Harness,
    check_l1_adapter,
)

FORCE_RULES = {"L1-FORCE-MOVE", "L1-FORCE-MOVE-CHECKED"}
L1S = ["memory", "local", "evm-embedded", "evm-anvil"]


@pytest.fixture(scope="module", params=L1S)
def harness(request: pytest.FixtureRequest) -> Iterator[L1Harness]:
    """One chain per L1 for the module: every scenario makes new parties and channels."""
    if request.param == "memory":
        yield MemoryL1Harness()
    elif request.param == "local":
        path = request.getfixturevalue("tmp_path_factory").mktemp("l1") / "l1.sqlite3"
        with LocalL1Harness(path) as local:
            yield local
    else:
        from bfs_smr.adapters.evm import DevChain

        if request.param == "evm-embedded":
            yield EvmL1Harness(DevChain.embedded())
        else:
            yield EvmL1Harness(DevChain.rpc(request.getfixturevalue("anvil_url")))


@pytest.mark.parametrize("rule", list(L1_RULES))
def test_every_bundled_l1_keeps_every_rule(harness: L1Harness, rule: str) -> None:
    # every bundled L1 forces moves: the adjudicator through the app's rules contract
    assert check_l1_adapter(harness, rules=[rule], check_reasons=True) == [rule]


def test_a_whole_run_checks_every_rule_in_order() -> None:
    assert check_l1_adapter(MemoryL1Harness()) == list(L1_RULES)


def test_an_unknown_rule_is_a_local_error() -> None:
    with pytest.raises(LocalError, match="no such L1 rule: not-a-rule"):
        check_l1_adapter(MemoryL1Harness(), rules=["not-a-rule", "L1-OPEN-LOCKS"])


# -- L1s broken on purpose: each must fail the run, naming the rule it breaks ---------------


class RefuteResetsTheWindow(MemoryL1):
    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        super().refute(sender, update)
        ch = self._get(update.update.channel_id)
        if ch.status is L1ChannelStatus.CLOSING:
            ch.deadline = self.now() + ch.params.challenge_window


class SettlePaysTwice(MemoryL1):
    def settle(self, sender: bytes, channel_id: bytes) -> tuple[int, int]:
        ch = self._get(channel_id)
        if ch.status is L1ChannelStatus.SETTLED and ch.payouts is not None:
            for account, amount in zip(ch.params.participants, ch.payouts, strict=True):
                self._credit(account, amount)
            return ch.payouts
        return super().settle(sender, channel_id)


class CloseOverANewerUpdate(MemoryL1):
    """A unilateral close on a closing channel registers its (stale) update again."""

    def unilateral_close(
        self, sender: bytes, update: SignedUpdate, reveal: bytes | None = None
    ) -> int:
        ch = self._get(update.update.channel_id)
        if ch.status is L1ChannelStatus.CLOSING:
            ch.status = L1ChannelStatus.OPEN
        return super().unilateral_close(sender, update, reveal)


class RefuteWithAnyUpdate(MemoryL1):
    def _check_newer(self, ch: ChannelRecord, signed: SignedUpdate) -> None:
        pass


class DepositNotCheckedAgainstBalance(MemoryL1):
    def deposit(self, sender: bytes, channel_id: bytes, amount: int) -> None:
        have = self._balance_of(sender)
        ch = self._get(channel_id)
        index = ch.params.participants.index(sender)
        missing = ch.params.deposits[index] - ch.deposited[index]
        if type(amount) is int and have < amount <= missing:
            self._credit(sender, amount - have)  # locks value the sender does not have
        super().deposit(sender, channel_id, amount)


class OpenNotCheckedAgainstBalance(MemoryL1):
    def _debit(self, account: bytes, amount: int) -> None:
        self._set_balance(account, self._balance_of(account) - amount)


class HalfSignedUpdatesCount(MemoryL1):
    def _check_doubly_signed(self, ch: ChannelRecord, signed: SignedUpdate) -> None:
        if signed.update.outcome[0] + signed.update.outcome[1] != sum(ch.deposited):
            raise L1Error("outcome does not pay out exactly the locked value")


class CloseWindowTooShort(MemoryL1):
    def unilateral_close(
        self, sender: bytes, update: SignedUpdate, reveal: bytes | None = None
    ) -> int:
        deadline = super().unilateral_close(sender, update, reveal)
        ch = self._get(update.update.channel_id)
        if ch.status is L1ChannelStatus.CLOSING:
            ch.deadline = deadline = self.now() + ch.params.challenge_window // 2
        return deadline


class ForceMoveWithoutAFreshWindow(MemoryL1):
    def force_move(self, sender: bytes, state: bytes, update: SignedUpdate) -> int:
        ch = self._get(update.update.channel_id)
        old = ch.deadline
        super().force_move(sender, state, update)
        ch.deadline = old
        assert old is not None
        return old


class CancelKeepsTheDeposits(MemoryL1):
    def cancel(self, sender: bytes, channel_id: bytes) -> None:
        ch = self._get(channel_id)
        if ch.status is L1ChannelStatus.FUNDING and sender in ch.params.participants:
            ch.status = L1ChannelStatus.CANCELLED
            self._done(L1EventKind.CANCELLED, channel_id)
            return
        super().cancel(sender, channel_id)


class CloseIgnoresTheWatchSecret(MemoryL1):
    """A unilateral close is taken whatever it reveals (and publishes what it was given)."""

    def _check_reveal(self, ch: ChannelRecord, reveal: bytes | None) -> bytes | None:
        return reveal if ch.params.watch else None


class CloseHidesTheWatchSecret(MemoryL1):
    """The secret is checked but never published: a watchtower could not read its blob."""

    def _check_reveal(self, ch: ChannelRecord, reveal: bytes | None) -> bytes | None:
        super()._check_reveal(ch, reveal)
        return None


class RefusesWithAValueError(MemoryL1):
    def settle(self, sender: bytes, channel_id: bytes) -> tuple[int, int]:
        try:
            return super().settle(sender, channel_id)
        except L1Error as exc:
            raise ValueError(exc.reason) from None


class RefusesWithoutAReason(MemoryL1):
    def cancel(self, sender: bytes, channel_id: bytes) -> None:
        try:
            super().cancel(sender, channel_id)
        except L1Error:
            raise L1Error("") from None


class RefusedDepositIsCharged(MemoryL1):
    def deposit(self, sender: bytes, channel_id: bytes, amount: int) -> None:
        try:
            super().deposit(sender, channel_id, amount)
        except L1Error:
            if type(amount) is int and amount > 0:
                self._set_balance(sender, max(self._balance_of(sender) - amount, 0))
            raise


@pytest.mark.parametrize(
    "broken, rule",
    [
        (RefuteResetsTheWindow, "L1-REFUTE-KEEPS-DEADLINE"),
        (SettlePaysTwice, "L1-SETTLE-ONCE"),
        (CloseOverANewerUpdate, "L1-REFUTE-NEWER"),
        (RefuteWithAnyUpdate, "L1-REFUTE-NEWER"),
        (DepositNotCheckedAgainstBalance, "L1-OPEN-COVERED"),
        (OpenNotCheckedAgainstBalance, "L1-OPEN-COVERED"),
        (HalfSignedUpdatesCount, "L1-UPDATE-VALID"),
        (CloseWindowTooShort, "L1-CLOSE-WINDOW"),
        (CloseIgnoresTheWatchSecret, "L1-CLOSE-REVEALS"),
        (CloseHidesTheWatchSecret, "L1-CLOSE-REVEALS"),
        (ForceMoveWithoutAFreshWindow, "L1-FORCE-MOVE"),
        (CancelKeepsTheDeposits, "L1-NO-STUCK-VALUE"),
        (RefusesWithAValueError, "L1-REJECT-L1ERROR"),
        (RefusesWithoutAReason, "L1-REJECT-L1ERROR"),
        (RefusedDepositIsCharged, "L1-REJECT-L1ERROR"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else value,
)
def test_a_broken_l1_fails_naming_the_rule_it_breaks(broken: type[MemoryL1], rule: str) -> None:
    with pytest.raises(L1RuleBroken) as caught:
        check_l1_adapter(MemoryL1Harness(broken()))
    assert caught.value.rule == rule
    assert str(caught.value).startswith(f"{rule}: ")
    assert isinstance(caught.value, AssertionError)


def test_a_broken_rule_is_caught_when_checked_alone() -> None:
    harness = MemoryL1Harness(RefuteResetsTheWindow())
    others = [rule for rule in L1_RULES if rule != "L1-REFUTE-KEEPS-DEADLINE"]
    assert check_l1_adapter(harness, rules=others) == others
    with pytest.raises(L1RuleBroken, match="the deadline after refuting"):
        check_l1_adapter(harness, rules=["L1-REFUTE-KEEPS-DEADLINE"])


class RewordedReasons(MemoryL1):
    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        try:
            super().refute(sender, update)
        except L1Error:
            raise L1Error("refutation refused") from None


def test_reasons_are_worded_freely_unless_asked_to_match_the_bundled_ones() -> None:
    assert check_l1_adapter(MemoryL1Harness(RewordedReasons())) == list(L1_RULES)
    with pytest.raises(L1RuleBroken, match="refused with 'refutation refused', not saying") as e:
        check_l1_adapter(MemoryL1Harness(RewordedReasons()), check_reasons=True)
    assert e.value.rule == "L1-REJECT-L1ERROR"


def test_a_harness_whose_adapter_acts_for_another_key_is_told_so() -> None:
    class Confused(MemoryL1Harness):
        def adapter(self, secret: bytes) -> Any:
            return self.chain.adapter(b"\x01" * 32)

    with pytest.raises(AssertionError, match=r"adapter\(secret\) must transact as"):
        check_l1_adapter(Confused())


def test_the_documented_harness_passes_the_kit() -> None:
    """The example of docs/l1-adapters.md, section "Checking an adapter", runs."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "l1-adapters.md").read_text()
    _, _, section = text.partition("\n## Checking an adapter: check_l1_adapter\n")
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1
    namespace: dict[str, Any] = {"__name__": "l1_adapters_md"}
    exec(blocks[0], namespace)  # it ends by asserting that every rule was checked
    assert "MyHarness" in namespace
