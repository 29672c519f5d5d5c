"""Bet: a yes/no wager between the two parties (an example app, not bundled).

The walk-through is docs/writing-an-app.md. Each party starts with its deposit as free
balance. One party proposes a bet ("the answer to this question is yes") and escrows its
stake; the other matches the stake to accept. Later both report the answer: matching
reports pay the whole pot to the winner, conflicting reports void the bet and refund both
stakes. There is no oracle, so "both must agree" is the strongest rule two parties can
enforce alone; a party that refuses to report can at worst get its stake back.
"""

from __future__ import annotations

from typing import Any

from bfs_smr import ChannelParams, StateMachine, reject

__all__ = ["Bet"]

MAX_QUESTION = 140

# The open bet: (proposer, stake, question, accepted, reports); reports[i] is the answer
# participant i reported (None: not yet). The proposer bets "yes".
OpenBet = tuple[int, int, str, bool, tuple[bool | None, bool | None]]
# State: (free balance of participant 0, of participant 1, bets proposed so far, open bet).
BetState = tuple[int, int, int, OpenBet | None]

_NAMED = ({"accept"}, {"withdraw"}, {"report", "yes"})


def _bad_char(c: str) -> bool:
    # Fixed code-point ranges, not str.isprintable(): that follows the Unicode database of
    # the running Python, and both parties (and L1) must accept exactly the same strings.
    n = ord(c)
    return n < 0x20 or 0x7F <= n < 0xA0 or 0xD800 <= n <= 0xDFFF


class Bet(StateMachine[BetState]):
    """Commands; ``n`` is the number of the open bet (1 for the first proposal):

    - ``{"propose": question, "stake": amount}``: bet ``amount`` that the answer is yes;
    - ``{"accept": n}``: the other party matches the stake (it bets no);
    - ``{"withdraw": n}``: the proposer takes back a bet nobody accepted;
    - ``{"report": n, "yes": answer}``: each party reports the answer, once.
    """

    name = "bet"
    version = 1

    def initial_state(self, params: ChannelParams) -> BetState:
        if params.options:
            raise reject("bet takes no options")
        return (params.deposits[0], params.deposits[1], 0, None)

    def apply(self, state: BetState, command: Any, actor: int) -> BetState:
        free0, free1, count, bet = state
        free = [free0, free1]
        if type(command) is not dict:
            raise reject("a command is a map")
        if command.keys() == {"propose", "stake"}:
            question, stake = command["propose"], command["stake"]
            if bet is not None:
                raise reject(f"bet {count} is still open")
            if type(question) is not str or not 0 < len(question) <= MAX_QUESTION:
                raise reject(f"question must be a string of 1 to {MAX_QUESTION} characters")
            if any(_bad_char(c) for c in question):
                raise reject("question contains a control character")
            if type(stake) is not int or stake <= 0:
                raise reject("stake must be a positive integer")
            if stake > min(free):
                raise reject(f"stake {stake} exceeds what a party can put up ({min(free)})")
            free[actor] -= stake
            return (free[0], free[1], count + 1, (actor, stake, question, False, (None, None)))
        if command.keys() not in _NAMED:
            raise reject("expected propose+stake, accept, withdraw or report+yes")
        # Every later command names its bet: the sequencer orders the peer's commands, and
        # must not be able to slip a withdraw + bigger proposal in before an accept.
        verb = "report" if "report" in command else next(iter(command))
        number = command[verb]
        if bet is None or type(number) is not int or number != count:
            raise reject(f"bet {number!r} is not open")
        proposer, stake, question, accepted, reports = bet
        if verb == "withdraw":
            if actor != proposer or accepted:
                raise reject("only the proposer can withdraw, and only before acceptance")
            free[actor] += stake
            return (free[0], free[1], count, None)
        if verb == "accept":
            if actor == proposer or accepted:
                raise reject("only the other party can accept, and only once")
            if stake > free[actor]:
                raise reject(f"stake {stake} exceeds your free balance {free[actor]}")
            free[actor] -= stake
            return (free[0], free[1], count, (proposer, stake, question, True, reports))
        answer = command["yes"]
        if type(answer) is not bool:
            raise reject('"yes" must be true or false')
        if not accepted or reports[actor] is not None:
            raise reject("report once, after the bet is accepted")
        new = (answer, reports[1]) if actor == 0 else (reports[0], answer)
        other = new[1 - actor]
        if other is None:
            return (free[0], free[1], count, (proposer, stake, question, True, new))
        if other == answer:
            free[proposer if answer else 1 - proposer] += 2 * stake
        else:  # no agreement, no winner: both stakes go back
            free[0] += stake
            free[1] += stake
        return (free[0], free[1], count, None)

    def outcome(self, state: BetState) -> tuple[int, int]:
        # An undecided bet is refunded: escrowed stakes go back to whoever put them up.
        free0, free1, _, bet = state
        paid = [free0, free1]
        if bet is not None:
            proposer, stake, _, accepted, _ = bet
            paid[proposer] += stake
            if accepted:
                paid[1 - proposer] += stake
        return (paid[0], paid[1])

    def may_close(self, state: BetState) -> bool:
        # Settle or withdraw the open bet first; a unilateral close refunds it anyway.
        return state[3] is None
