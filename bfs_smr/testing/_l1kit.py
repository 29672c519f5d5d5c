"""The parts of ``check_l1_adapter``: the harness protocol, the rules, and the checks.

The scenarios themselves are in ``_l1scenarios``; this module holds what they are made
of, so a failing check can name the rule it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bfs_smr._crypto import SignatureScheme, Signer
from bfs_smr._errors import L1Error
from bfs_smr._l1 import L1Adapter, L1ChannelInfo, L1Event, L1EventKind
from bfs_smr._update import SignedUpdate
from bfs_smr.runtime import LocalPair, load_app

__all__ = ["L1_RULES", "L1Harness", "L1RuleBroken"]

#: Every L1 rule of docs/design.md §5, by its stable name, in the order
#: :func:`~bfs_smr.testing.check_l1_adapter` checks them.
L1_RULES: dict[str, str] = {
    "L1-OPEN-FRESH-ID": (
        "a channel is opened once, under the id its parameters make (fresh per nonce), "
        "and only by a participant"
    ),
    "L1-OPEN-LOCKS": (
        "opening and depositing lock each party's share, up to what is still due; the "
        "channel is funding until every share is in, then open"
    ),
    "L1-OPEN-COVERED": "no party locks value it does not have, by open or by deposit",
    "L1-REJECT-L1ERROR": (
        "every rejection is an L1Error with a reason, and changes nothing on the L1"
    ),
    "L1-UPDATE-VALID": (
        "an update counts only if both participants signed it for this channel (I5) and "
        "its outcome pays exactly the locked value"
    ),
    "L1-COOP-CLOSE": (
        "a final update signed by both pays its outcome at once; a non-final one, or a "
        "channel still funding, is refused"
    ),
    "L1-CLOSE-WINDOW": (
        "a unilateral close registers a doubly-signed update and starts the window, "
        "deadline = now + challenge_window; a final update pays at once instead"
    ),
    "L1-CLOSE-REVEALS": (
        "a unilateral close of a channel whose parameters commit to a watch secret must "
        "reveal that secret, and its closing event publishes it; without it, or with "
        "another, the close is refused"
    ),
    "L1-REFUTE-NEWER": (
        "in the window only a doubly-signed update with a higher seq replaces the "
        "registered one; nothing older or equal, no second close, nothing after the window"
    ),
    "L1-REFUTE-KEEPS-DEADLINE": "a refutation never moves the deadline",
    "L1-FORCE-MOVE": (
        "(optional) the party to move may post the next move signed by itself alone; it "
        "becomes the registered update with a fresh window, and is answered the same way"
    ),
    "L1-FORCE-MOVE-CHECKED": (
        "(optional) a force move runs the app's rules on the registered state: a wrong "
        "state, the wrong mover or an illegal move is refused, and a doubly-signed update "
        "at the same seq beats a forced one"
    ),
    "L1-SETTLE-ONCE": (
        "settle pays the registered outcome after the deadline, never before, exactly once"
    ),
    "L1-NO-DOUBLE-PAY": "once a channel is paid out, nothing pays from it again",
    "L1-NO-STUCK-VALUE": (
        "a channel never fully funded can be cancelled and refunds every deposit; through "
        "a dispute every locked unit is paid out to someone"
    ),
}

#: The rules an adapter without ``supports_force_move`` is not checked on.
FORCE_RULES = ("L1-FORCE-MOVE", "L1-FORCE-MOVE-CHECKED")

#: The challenge window of every channel the scenarios open, in L1 seconds.
WINDOW = 1_000


class L1RuleBroken(AssertionError):
    """An adapter broke an L1 rule.

    Attributes:
        rule: the rule's name, a key of :data:`L1_RULES` (e.g. ``"L1-REFUTE-NEWER"``).
        detail: what the adapter did.
    """

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail} (rule: {L1_RULES.get(rule, '?')})")
        self.rule = rule
        self.detail = detail


class L1Harness(Protocol):
    """What :func:`~bfs_smr.testing.check_l1_adapter` needs to drive one L1.

    A harness stands for one chain. The kit makes every party it needs through it: a
    fresh secret, an adapter acting for that secret's account, and value to lock. It
    never reaches the chain by any other way than the adapters and these methods.
    ``bfs_smr.testing`` has harnesses for the bundled L1s (``MemoryL1Harness``,
    ``LocalL1Harness``, ``EvmL1Harness``) to copy from.
    """

    @property
    def scheme(self) -> SignatureScheme:
        """The signature scheme of this L1's keys (the adapters' ``format.scheme``)."""
        ...

    def adapter(self, secret: bytes) -> L1Adapter:
        """A new adapter transacting as the account of ``secret`` (32 random bytes).

        Its ``account`` must be ``scheme.public_key(secret)``. Give it whatever it needs
        to transact besides the value it locks (gas money, for instance).
        """
        ...

    def fund(self, account: bytes, amount: int) -> None:
        """Make ``amount`` more value spendable by ``account`` (a faucet)."""
        ...

    def balance(self, account: bytes) -> int:
        """What ``account`` holds unlocked, as the rules count it: leave out any fees it
        paid and anything :meth:`adapter` gave it to pay fees with, so that a party that
        locked nothing and was paid nothing holds exactly what it was funded."""
        ...

    def advance(self, seconds: int) -> None:
        """Move the L1's time (``adapter.now()``) forward by ``seconds``."""
        ...


class Kit:
    """The scenarios' tools: parties, channels, and checks that name the current rule."""

    def __init__(self, harness: L1Harness, *, check_reasons: bool) -> None:
        self.harness = harness
        self.check_reasons = check_reasons
        self.rule = ""

    # -- checks -----------------------------------------------------------------------

    def expect(self, ok: bool, detail: str) -> None:
        if not ok:
            raise L1RuleBroken(self.rule, detail)

    def equal(self, got: Any, want: Any, what: str) -> None:
        self.expect(got == want, f"{what}: got {got!r}, expected {want!r}")

    def refused(
        self,
        pair: LocalPair,
        what: str,
        words: str,
        call: Callable[..., object],
        *args: Any,
        accounts: Sequence[bytes] = (),
    ) -> None:
        """``call(*args)`` must raise an L1Error with a reason and change nothing.

        Args:
            pair: the channel whose L1 view and parties' balances must stay as they were.
            what: the transaction, as the failure message names it.
            words: what the bundled adapters' reason says (checked with check_reasons).
            accounts: more accounts whose balances must stay as they were.
        """
        before = self.snapshot(pair, accounts)
        try:
            call(*args)
        except L1Error as exc:
            reason = str(exc.reason).strip()
            if not reason:
                raise L1RuleBroken(
                    "L1-REJECT-L1ERROR", f"{what}: refused without a reason"
                ) from exc
            if self.check_reasons and words.lower() not in reason.lower():
                raise L1RuleBroken(
                    "L1-REJECT-L1ERROR", f"{what}: refused with {reason!r}, not saying {words!r}"
                ) from exc
        except Exception as exc:  # the rule: a rejection is an L1Error, nothing else
            raise L1RuleBroken(
                "L1-REJECT-L1ERROR",
                f"{what}: refused with {type(exc).__name__}({exc}), not an L1Error",
            ) from exc
        else:
            raise L1RuleBroken(self.rule, f"{what} was accepted")
        after = self.snapshot(pair, accounts)
        names = ("the channel", "balances", "other balances")
        for name, old, new in zip(names, before, after, strict=True):
            if old != new:
                raise L1RuleBroken(
                    "L1-REJECT-L1ERROR", f"{what}: refused, but {name} changed: {old} -> {new}"
                )

    def snapshot(self, pair: LocalPair, accounts: Sequence[bytes] = ()) -> tuple[Any, ...]:
        """The channel as L1 shows it (None: not on L1), and the balances."""
        view = pair.l1_view(pair.alice)
        return (view, self.values(pair), tuple(self.harness.balance(a) for a in accounts))

    # -- parties and channels -----------------------------------------------------------

    def party(self, fund: int = 0) -> tuple[Signer, L1Adapter]:
        """A new party: a fresh key, an adapter acting for it, and ``fund`` to lock."""
        secret = os.urandom(32)
        signer = Signer(self.harness.scheme, secret)
        adapter = self.harness.adapter(secret)
        assert adapter.account == signer.public_key, (
            "harness: adapter(secret) must transact as scheme.public_key(secret)"
        )
        if fund:
            self.harness.fund(signer.public_key, fund)
        return signer, adapter

    def pair(
        self,
        deposits: tuple[int, int] = (1_000, 0),
        *,
        app: str = "payments",
        funds: tuple[int, int] | None = None,
        parties: tuple[tuple[Signer, L1Adapter], tuple[Signer, L1Adapter]] | None = None,
        nonce: int = 0,
        watch: bytes | None = None,
    ) -> LocalPair:
        """Alice and Bob, each funded their deposit (or ``funds``), not yet on L1; with
        ``watch`` (a 32-byte secret), their channel's parameters commit to it."""
        alice, bob = parties or (self.party(), self.party())
        for (signer, _), amount in zip((alice, bob), funds or deposits, strict=True):
            if amount:
                self.harness.fund(signer.public_key, amount)
        pair = LocalPair(
            load_app(app),
            alice=alice[0],
            bob=bob[0],
            alice_l1=alice[1],
            bob_l1=bob[1],
            deposits=deposits,
            challenge_window=WINDOW,
            nonce=nonce,
            watch=watch,
        )
        for party in pair.parties:
            party.l1.track(pair.params)
        return pair

    def opened(self, deposits: tuple[int, int] = (1_000, 0), *, app: str = "payments") -> LocalPair:
        """A channel both parties signed the opening of and funded on L1."""
        pair = self.pair(deposits, app=app)
        pair.open()
        return pair

    # -- reading ------------------------------------------------------------------------

    def values(self, pair: LocalPair) -> tuple[int, int]:
        a, b = pair.params.participants
        return self.harness.balance(a), self.harness.balance(b)

    def info(self, pair: LocalPair) -> L1ChannelInfo:
        return pair.alice.l1.channel(pair.params.channel_id)

    def events(self, pair: LocalPair) -> list[L1Event]:
        cid = pair.params.channel_id
        return [e for e in pair.alice.l1.events() if e.channel_id == cid]

    def kinds(self, pair: LocalPair) -> list[L1EventKind]:
        return [e.kind for e in self.events(pair)]

    def now(self, pair: LocalPair) -> int:
        return pair.alice.l1.now()

    # -- payments -----------------------------------------------------------------------

    def pay(self, pair: LocalPair, amount: int, by: str = "alice") -> SignedUpdate:
        """``by`` pays ``amount``; returns the doubly-signed update that holds it."""
        party = pair.alice if by == "alice" else pair.bob
        party.chan.issue({"pay": amount})
        pair.pump()
        return self.committed(pair)

    def committed(self, pair: LocalPair) -> SignedUpdate:
        committed = pair.bob.chan.committed
        assert committed is not None
        return committed

    def final(self, pair: LocalPair) -> SignedUpdate:
        """Both sign a final update (not submitted); returns it."""
        pair.alice.chan.close()
        pair.pump()
        assert pair.alice.final is not None, "the final update was not doubly signed"
        return pair.alice.final
