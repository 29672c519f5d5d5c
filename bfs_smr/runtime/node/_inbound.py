"""The inbound-channel policy: whether this node takes a channel a peer opens with it.

Consent before commitment (docs/design.md §6): a node never locks its own funds because a
peer asked. What it deposits into channels others open, the longest window it accepts and
the apps it runs are its operator's (:class:`._config.NodeConfig`); what it has room for
is bounded (channels per peer, channels others opened that are not on L1 yet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bfs_smr._crypto import Signer
from bfs_smr._errors import CodecError, CommandRejected, LocalError
from bfs_smr._l1 import L1ChannelStatus
from bfs_smr._update import ChannelParams
from bfs_smr.plugins import L1Connection
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import ChannelLoader, NodeChannel, check_app
from bfs_smr.runtime.node._config import NodeConfig
from bfs_smr.runtime.node._tasks import L1Thread
from bfs_smr.runtime.store import Store

__all__ = ["MAX_UNFUNDED_INBOUND", "InboundPolicy"]

#: Channels others opened with this node that are not on L1 yet, at most: each is a store
#: row and a watch that anyone can make for free; beyond it, a new open is refused.
MAX_UNFUNDED_INBOUND = 64


class _Accepted(Exception):
    """An open this node took already: answer it as accepted again."""


class InboundPolicy:
    """Decides, and records, the channels peers open with this node.

    Args:
        config: the operator's policy.
        l1: the node's L1.
        thread: the thread L1 calls run in.
        chans: the node's channels by id.
        store: where an accepted channel is recorded.
        load: loads an accepted channel into ``chans``.
        signer: the key this node signs channel updates with (its account).
        refused: called for each channel refused (the node's metrics).
    """

    def __init__(
        self,
        config: NodeConfig,
        l1: L1Connection,
        thread: L1Thread,
        chans: dict[bytes, NodeChannel],
        *,
        store: Store,
        load: ChannelLoader,
        signer: Signer,
        refused: Callable[[], None] | None = None,
    ) -> None:
        self._refused = refused
        self.config = config
        self.l1 = l1
        self.thread = thread
        self.chans = chans
        self.store = store
        self.load = load
        self.signer = signer
        self.account = signer.public_key

    async def answer(
        self, peer: bytes, opener: bytes | None, value: Any
    ) -> tuple[bytes, str | None]:
        """Take or refuse the channel ``peer`` opens with parameters ``value`` (as sent),
        ``opener`` being the account the peer announced on this L1 (None: another L1).

        Returns:
            the channel id (empty if the parameters are malformed) and None if the
            channel is taken, else the reason it is refused.
        """
        log = get_logger("bfs_smr.node", peer=peer)
        cid = b""
        try:
            params = _params(value)
            cid = params.channel_id
            await self._take(peer, opener, params)
            get_logger("bfs_smr.node", channel=cid, peer=peer).info("channel accepted")
        except _Accepted:
            pass
        except (LocalError, CommandRejected, ValueError, TypeError) as exc:
            log.info("channel refused", reason=str(exc))
            if self._refused is not None:
                self._refused()
            return cid, str(exc)
        return cid, None

    async def _take(self, peer: bytes, opener: bytes | None, params: ChannelParams) -> None:
        cid = params.channel_id
        if params.l1 != self.l1.adapter.format.domain:
            raise LocalError("the channel is on another L1")
        if opener is None or params.participants != (opener, self.account):
            raise LocalError(
                "the participants must be the opener's and this node's accounts, in order"
            )
        if self._opened_by(cid, peer):
            raise _Accepted  # a repeated open (its answer was lost with a link)
        self.check_policy(peer, params)
        if params.watch != self.load.watch_commitment(peer, params):
            raise LocalError(
                "the channel's watch commitment is not the one both nodes derive "
                "(docs/watchtower.md)"
            )
        self.check_room(peer, cid)
        check_app(params, self.load.app(params.app, params.app_version), self.l1, self.signer)
        due = params.deposits[1]
        if due:
            have = await self.thread.call(self.l1.adapter.balance)
            # Opens handled meanwhile count: check the room again, and what this
            # node has promised to channels it has not funded yet.
            if self._opened_by(cid, peer):
                raise _Accepted
            self.check_room(peer, cid)
            promised = self._promised_deposits()
            if have - promised < due:
                raise LocalError(
                    f"this node cannot deposit {due} (it holds {have} on L1, "
                    f"{promised} of it promised to channels not yet funded)"
                )
        self.store.add_channel(params)
        self.store.set_peer(cid, peer)
        self.load(cid)

    def _opened_by(self, cid: bytes, peer: bytes) -> bool:
        """Whether ``peer`` opened this channel here already (same id, same parameters)."""
        c = self.chans.get(cid)
        return c is not None and c.peer == peer and c.chan.index == 1

    def check_room(self, peer: bytes, cid: bytes) -> None:
        """Refuse a channel a peer opens that this node has no room for: one it holds
        already, one over ``--max-channels-per-peer``, or one over
        :data:`MAX_UNFUNDED_INBOUND` channels opened by others and not yet on L1 (each
        costs a store row and a watch for free: identities cost nothing to make)."""
        if cid in self.chans:
            raise LocalError("this channel exists already")
        most = self.config.max_channels_per_peer
        if sum(1 for c in self.chans.values() if c.peer == peer) >= most:
            raise LocalError(f"this node holds {most} channels with you already")
        unfunded = sum(1 for c in self.chans.values() if _inbound_not_on_l1(c))
        if unfunded >= MAX_UNFUNDED_INBOUND:
            raise LocalError(
                f"this node holds {unfunded} channels others opened that are not on L1 yet; "
                "open yours on L1 first or try later"
            )

    def _promised_deposits(self) -> int:
        """What this node still owes channels others opened: their deposits not yet made
        (an upper bound: a channel in funding may have this node's deposit already)."""
        return sum(
            c.chan.params.deposits[1]
            for c in self.chans.values()
            if c.chan.index == 1
            and c.payouts is None
            and c.l1_status in (None, L1ChannelStatus.FUNDING)
        )

    def check_policy(self, peer: bytes, params: ChannelParams) -> None:
        """The operator's inbound-channel policy: a channel a peer opens is accepted only
        from allowed peers, for accepted apps, within the window and deposit limits.

        Raises:
            LocalError: the reason, worded for the opener (who sees it after "the peer
                refused the channel: "), naming the option that sets the limit.
        """
        config = self.config
        if config.allow is not None and peer not in config.allow:
            raise LocalError("it takes channels only from the peers it lists (--allow-peer)")
        if params.app not in config.accept_apps:
            accepted = ", ".join(sorted(config.accept_apps)) or "none"
            raise LocalError(
                f"it does not run {params.app[:40]!r} channels others open (it accepts: "
                f"{accepted[:60]}; --accept-app)"
            )
        window = params.challenge_window
        if window < self.l1.window:
            raise LocalError(f"the challenge window must be at least {self.l1.window} s")
        if window > config.max_window:
            raise LocalError(
                f"the challenge window of {window} s is over its limit of {config.max_window} s "
                "(--max-window)"
            )
        if params.deposits[1] > config.max_inbound_deposit:
            raise LocalError(
                f"it deposits at most {config.max_inbound_deposit} into a channel another node "
                f"opens, not {params.deposits[1]} (--max-inbound-deposit)"
            )


def _params(value: Any) -> ChannelParams:
    """Channel parameters as a peer sent them, checked."""
    try:
        return ChannelParams.from_value(value)
    except (ValueError, TypeError, LookupError, LocalError, CodecError) as exc:
        # LookupError: e.g. participants sent as [] or {} (an index or key fails)
        raise LocalError(f"malformed channel parameters: {exc}") from None


def _inbound_not_on_l1(c: NodeChannel) -> bool:
    """A channel another node opened with this one that L1 has not seen yet."""
    return c.chan.index == 1 and c.payouts is None and c.l1_status is None
