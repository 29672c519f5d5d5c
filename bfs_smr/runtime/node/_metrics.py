"""The node's Prometheus metrics (``GET /metrics``), in a registry of its own.

Every name starts with ``bfs_smr_``. Labels take values from fixed sets only
(:data:`L1_KINDS`, :data:`REFUSALS`), never text a peer or a client chose, so the number of
series is bounded whatever anyone sends.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["L1_KINDS", "REFUSALS", "NodeMetrics"]

#: The L1 transactions counted, by kind.
L1_KINDS = (
    "open",
    "fund",
    "close",
    "unilateral_close",
    "refute",
    "settle",
    "cancel",
    "force_move",
)

#: Why the node refused something: peers' frames and connections, control requests, API
#: requests.
REFUSALS = (
    "peer_protocol",  # a peer broke the link's protocol (the link is closed)
    "peer_channel",  # a peer broke a channel's protocol (its messages are ignored)
    "peer_foreign_channel",  # a message for a channel the peer is not in
    "peer_connection",  # a connection refused at the handshake (not allowed, caps)
    "peer_open",  # a channel a peer opened was refused (policy)
    "control_bad_request",  # a malformed control request
    "control_secret",  # a control request with the wrong secret
    "control_busy",  # too many control connections
    "api_unauthorized",  # no or a wrong bearer token
    "api_bad_request",  # a malformed request or a bad field (400)
    "api_not_found",  # no such route or channel (404)
    "api_conflict",  # the channel is not in a state to do it (409)
    "api_too_large",  # a body over the limit (413)
    "api_busy",  # too many requests or streams, or the peer or L1 did not answer (503)
)

#: Buckets of the store's commit latency, in seconds (an fsync is ~0.1-10 ms).
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


class NodeMetrics:
    """One node's metrics.

    Args:
        links_up: counts the node's live peer links (read at each scrape).
    """

    def __init__(self, links_up: Callable[[], int]) -> None:
        # (Imported by a node, not by every command-line client importing this module.)
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.updates = Counter(
            "bfs_smr_updates_committed", "Doubly-signed updates made durable", registry=r
        )
        self.commands = Counter(
            "bfs_smr_commands_committed",
            "Commands (both parties') in doubly-signed updates made durable",
            registry=r,
        )
        self.fsync = Histogram(
            "bfs_smr_store_commit_seconds",
            "Latency of the store's commits (each one an fsync: the group commit)",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        links = Gauge("bfs_smr_links_up", "Live links to peers", registry=r)
        links.set_function(lambda: float(links_up()))
        self.l1_tx = Counter(
            "bfs_smr_l1_transactions",
            "L1 transactions this node submitted, by kind",
            ["kind"],
            registry=r,
        )
        self.refusals = Counter(
            "bfs_smr_refusals", "Requests and frames refused, by reason", ["reason"], registry=r
        )
        for kind in L1_KINDS:
            self.l1_tx.labels(kind=kind)
        for reason in REFUSALS:
            self.refusals.labels(reason=reason)

    def l1_transaction(self, kind: str) -> None:
        assert kind in L1_KINDS, kind
        self.l1_tx.labels(kind=kind).inc()

    def refused(self, reason: str) -> None:
        assert reason in REFUSALS, reason
        self.refusals.labels(reason=reason).inc()

    def store_commit(self, seconds: float) -> None:
        self.fsync.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and that format's content type."""
        from prometheus_client import generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
