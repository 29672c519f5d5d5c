"""The node's HTTP API with real parts: two ``bfs-smr node --http`` processes on a local L1.

A program drives a whole channel through the API alone (open, pay, commands, the events
it sees on the stream, close, the payouts on L1); wrong tokens, bad bodies and random
input get 4xx answers, never a 500; the metrics parse with prometheus_client's parser;
the OpenAPI document names exactly the routes the server has.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bfs_smr.plugins import load_l1
from bfs_smr.runtime.node._events import MAX_STREAMS, EventHub
from bfs_smr.runtime.node._http import MAX_BODY, HttpApi
from bfs_smr.runtime.node._metrics import NodeMetrics
from bfs_smr.runtime.node._openapi import openapi_document
from tests.nodeproc import NodeProc, cli, local_l1, ok

WINDOW = 5


@dataclass
class Api:
    """A client of one node's HTTP API."""

    node: NodeProc
    host: str
    port: int
    token: str

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
        timeout: float = 90.0,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        given = self.token if token is None else token
        if given:
            headers["Authorization"] = f"Bearer {given}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read()
        finally:
            conn.close()
        kind = response.getheader("Content-Type", "")
        value = json.loads(text) if kind.startswith("application/json") else text.decode()
        return response.status, value

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, value = self.request(method, path, body)
        assert code == status, (method, path, code, value)
        return value


class Stream:
    """Reads a node's event stream in a thread; events arrive in :attr:`events`."""

    def __init__(self, api: Api) -> None:
        self.conn = http.client.HTTPConnection(api.host, api.port, timeout=120)
        self.conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {api.token}"})
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type") == "text/event-stream"
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        kind = None
        try:
            for line in self.response:
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    kind = text[len("event: ") :]
                elif text.startswith("data: ") and kind is not None:
                    self.events.put((kind, json.loads(text[len("data: ") :])))
                    kind = None
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (http.client then reads from a closed file)

    def wait_for(self, kind: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose data has the ``match`` items (others are
        skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} event with {match} on the stream"
            try:
                got, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            assert "channel" in data and len(data["channel"]) == 64
            if got == kind and all(data.get(k) == v for k, v in match.items()):
                return data

    def close(self) -> None:
        assert self.sock is not None
        self.sock.shutdown(socket.SHUT_RDWR)  # ends the reader's read; then close
        self.thread.join(10)
        self.conn.close()


def _api(node: NodeProc) -> Api:
    control = json.loads((node.dir / "control.json").read_text())
    host, port = control["http"].rsplit(":", 1)
    token = (node.dir / "api.token").read_text().strip()
    return Api(node, host, int(port), token)


@dataclass
class Nodes:
    l1: str
    alice: NodeProc
    bob: NodeProc
    a: Api
    b: Api


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("http")
    spec = local_l1(root, WINDOW)
    http = ("--http", "127.0.0.1:0")
    alice = NodeProc(root / "alice", spec, extra=http).start()
    bob = NodeProc(root / "bob", spec, extra=http).start()
    plugin = load_l1(spec)
    plugin.fund(plugin.parse_account(alice.node_id), 10_000)
    try:
        yield Nodes(spec, alice, bob, _api(alice), _api(bob))
    finally:
        for node in (alice, bob):
            if node.alive():
                node.stop()


def _balance(spec: str, node: NodeProc) -> int:
    plugin = load_l1(spec)  # (read in this process: a CLI process costs seconds here)
    return plugin.balance(plugin.parse_account(node.node_id))


def _open(nodes: Nodes, deposit: int = 100) -> str:
    body = {"peer": nodes.bob.address, "peer_id": nodes.bob.node_id, "deposit": deposit}
    opened = nodes.a.ok("POST", "/v1/channels", body, status=201)
    channel: str = opened["channel"]
    assert len(channel) == 64 and opened["l1"] == "open"
    return channel


def test_a_program_drives_a_whole_channel_through_the_api(nodes: Nodes) -> None:
    a, b = nodes.a, nodes.b

    alice_before = _balance(nodes.l1, nodes.alice)
    bob_before = _balance(nodes.l1, nodes.bob)
    assert a.ok("GET", "/v1/info")["node_id"] == nodes.alice.node_id
    stream_a, stream_b = Stream(a), Stream(b)
    try:
        channel = _open(nodes)
        seen = stream_a.wait_for("channel", channel=channel)
        assert seen["app"] == "payments"
        assert stream_b.wait_for("channel", channel=channel)["peer"] == nodes.alice.node_id
        stream_a.wait_for("l1", channel=channel, status="open")
        paid = a.ok("POST", f"/v1/channels/{channel}/pay", {"amount": 10})
        assert paid == {"channel": channel, "seq": paid["seq"], "count": 1}
        mine = stream_a.wait_for("update", channel=channel, seq=paid["seq"])
        assert mine["by"] == "me"
        assert mine["outcome"] == {nodes.alice.node_id: 90, nodes.bob.node_id: 10}
        theirs = stream_b.wait_for("update", channel=channel, seq=paid["seq"])
        assert theirs["by"] == "peer" and theirs["outcome"] == mine["outcome"]
        sent = a.ok("POST", f"/v1/channels/{channel}/commands", {"command": {"pay": 5}, "count": 2})
        assert sent["count"] == 2 and sent["seq"] > paid["seq"]
        shown = a.ok("GET", f"/v1/channels/{channel}")
        assert shown["outcome"] == {nodes.alice.node_id: 80, nodes.bob.node_id: 20}
        listed = b.ok("GET", "/v1/channels")["channels"]
        assert [c["channel"] for c in listed] == [channel]
        # An illegal command is the channel's refusal: 409, with the app's reason.
        code, refused = a.request("POST", f"/v1/channels/{channel}/pay", {"amount": 10**6})
        assert code == 409 and refused["error"]
        closing = a.ok("POST", f"/v1/channels/{channel}/close", {}, status=202)
        assert closing == {"channel": channel, "status": "closing"}
        settled = stream_a.wait_for("l1", channel=channel, status="settled")
        assert settled["payouts"] == {nodes.alice.node_id: 80, nodes.bob.node_id: 20}
        stream_b.wait_for("l1", channel=channel, status="settled")
        # Closing a settled channel again answers at once with the payouts.
        again = a.ok("POST", f"/v1/channels/{channel}/close", {"wait": True})
        assert again["payouts"] == settled["payouts"]
        # A settled channel leaves the list, as in `channel list`; all=true keeps it.
        assert channel not in [c["channel"] for c in a.ok("GET", "/v1/channels")["channels"]]
        every = a.ok("GET", "/v1/channels?all=true")["channels"]
        assert channel in [c["channel"] for c in every]
        assert a.request("GET", "/v1/channels?all=yes")[0] == 400
    finally:
        stream_a.close()
        stream_b.close()
    assert _balance(nodes.l1, nodes.alice) == alice_before - 20
    assert _balance(nodes.l1, nodes.bob) == bob_before + 20


def test_a_unilateral_close_streams_its_window_and_settles(nodes: Nodes) -> None:
    a = nodes.a
    channel = _open(nodes, deposit=40)
    a.ok("POST", f"/v1/channels/{channel}/pay", {"amount": 4})
    stream_a, stream_b = Stream(a), Stream(nodes.b)
    try:
        closing = a.ok("POST", f"/v1/channels/{channel}/close", {"unilateral": True}, 202)
        assert closing == {"channel": channel, "status": "closing"}
        window = stream_a.wait_for("l1", channel=channel, status="closing")
        assert type(window["deadline"]) is int and window["registered_seq"] == 1
        assert window["payouts"] is None
        shown = stream_a.wait_for("channel", channel=channel, phase="closing")
        assert shown["l1"] == "closing"
        theirs = stream_b.wait_for("l1", channel=channel, status="closing")
        assert theirs["deadline"] == window["deadline"]
        # The node settles once the window is over.
        settled = stream_a.wait_for("l1", channel=channel, status="settled")
        assert settled["payouts"] == {nodes.alice.node_id: 36, nodes.bob.node_id: 4}
    finally:
        stream_a.close()
        stream_b.close()
    alice, bob = _l1_counts(a), _l1_counts(nodes.b)
    assert alice["unilateral_close"] >= 1
    assert alice["settle"] + bob["settle"] >= 1  # whichever node saw the window end first


def _l1_counts(api: Api) -> dict[str, float]:
    return {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(api.ok("GET", "/metrics"))
        for s in family.samples
        if s.name == "bfs_smr_l1_transactions_total"
    }


def test_every_api_route_needs_the_token_and_the_page_does_not(nodes: Nodes) -> None:
    a = nodes.a
    for path in ("/v1/info", "/v1/channels", "/v1/events", "/v1/openapi.json", "/metrics"):
        for token in ("", "0" * 64, a.token[:-1], a.token + "0", "é"):
            code, value = a.request("GET", path, token=token)
            assert code == 401, (path, token)
            assert value == {"error": "a bearer token is required: Authorization: Bearer TOKEN"}
    code, _ = a.request("POST", "/v1/channels", {"deposit": 1}, token="x")
    assert code == 401
    code, _ = a.request("GET", "/", token="")
    assert code in (200, 404)  # the page (another branch's files) or its absence; no token


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "reason"),
    [
        ("POST", "/v1/channels", b"{", 400, "the body is not JSON"),
        ("POST", "/v1/channels", b"[1]", 400, "the body must be a JSON object"),
        ("POST", "/v1/channels", b'{"x": 1}', 400, "unknown field 'x'"),
        ("POST", "/v1/channels", b'{"deposit": 1}', 400, "the field 'peer' is required"),
        (
            "POST",
            "/v1/channels",
            b'{"peer": "127.0.0.1:1", "peer_id": "ab", "deposit": 1}',
            400,
            "a peer id is 64 hex digits",
        ),
        (
            "POST",
            "/v1/channels",
            b'{"peer": "nowhere", "peer_id": "' + b"a" * 64 + b'", "deposit": 1}',
            400,
            "expected HOST:PORT",
        ),
        (
            "POST",
            "/v1/channels",
            b'{"peer": "h:1", "peer_id": "a", "deposit": -1}',
            400,
            "deposit must be a non-negative integer",
        ),
        ("POST", "/v1/channels", b'{"deposit": NaN}', 400, "the body is not JSON"),
        ("POST", "/v1/channels", b"[" * 50_000, 400, "the body is not JSON"),
        ("POST", "/v1/channels", b"1" * 5000, 400, "the body is not JSON"),
        ("POST", "/v1/channels", b" " * (MAX_BODY + 1), 413, "the body is over 65,536 bytes"),
        ("GET", "/v1/channels/xyz", b"", 400, "a channel id is 64 hex digits"),
        ("GET", "/v1/channels/" + "ab" * 32, b"", 404, "no channel"),
        ("POST", "/v1/channels/" + "ab" * 32 + "/pay", b'{"amount": 1}', 404, "no channel"),
        ("GET", "/v1/nothing", b"", 404, "Not Found"),
        ("DELETE", "/v1/channels", b"", 405, "Method Not Allowed"),
    ],
)
def test_bad_input_is_a_4xx_with_the_reason(  # noqa: PLR0917 - the cases' columns
    nodes: Nodes, method: str, path: str, raw: bytes, status: int, reason: str
) -> None:
    code, value = nodes.a.request(method, path, raw=raw)
    assert code == status, value
    assert reason in value["error"]
    assert "\n" not in value["error"]


def test_bad_fields_of_a_channel_get_the_clis_reason(nodes: Nodes) -> None:
    channel = _open(nodes, deposit=50)
    a = nodes.a
    for route, body, reason in [
        ("pay", {"amount": "10"}, 'amount must be a non-negative integer, got "10"'),
        ("pay", {"amount": True}, "amount must be a non-negative integer, got true"),
        ("pay", {"amount": 1, "count": 0}, "count must be 1 to 10,000, got 0"),
        ("pay", {}, "the field 'amount' is required"),
        ("commands", {"command": {"pay": 1.5}}, ""),
        ("commands", {"count": 2}, "the field 'command' is required"),
        ("close", {"unilateral": "yes"}, "unilateral must be true or false"),
        ("close", {"wait": 1}, "wait must be true or false"),
        ("close", {"timeout": 0}, "timeout must be a number of seconds over 0"),
    ]:
        code, value = a.request("POST", f"/v1/channels/{channel}/{route}", body)
        assert 400 <= code < 500, (route, body, code, value)
        assert reason in value["error"]
    # The channel still works after all that.
    assert a.ok("POST", f"/v1/channels/{channel}/pay", {"amount": 1})["count"] == 1


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    [
        "peer",
        "peer_id",
        "app",
        "deposit",
        "peer_deposit",
        "options",
        "timeout",
        "command",
        "count",
        "amount",
        "unilateral",
        "wait",
        "x",
    ]
)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(["", "/pay", "/commands", "/close", "/nothing"]),
    which=st.sampled_from(["open", "unknown", "garbage"]),
    body=st.one_of(
        st.dictionaries(_FIELDS, _JSON, max_size=4),
        _JSON,
        st.binary(max_size=40).map(lambda b: {"raw": b.hex()}),
    ),
    text=st.text(max_size=30),
)
def test_random_bodies_and_paths_never_get_a_500(  # noqa: PLR0917 - Hypothesis's draws
    nodes: Nodes, random_channel: str, route: str, which: str, body: Any, text: str
) -> None:
    channel = {"open": random_channel, "unknown": "cd" * 32, "garbage": text}[which]
    path = f"/v1/channels/{urllib.parse.quote(channel, safe='')}{route}"
    method = "POST"
    if which == "open" and not route:
        path = "/v1/channels"
    elif which == "garbage" and route == "/nothing":
        method, path = "GET", "/v1/" + urllib.parse.quote(text)  # any path under /v1
    code, value = nodes.a.request(method, path, body, timeout=30)
    assert code < 500 or code == 503, (path, body, code, value)
    if code >= 400:
        assert isinstance(value, dict) and isinstance(value["error"], str)


@pytest.fixture(scope="module")
def random_channel(nodes: Nodes) -> str:
    return _open(nodes, deposit=1000)


def test_the_metrics_parse_and_count(nodes: Nodes) -> None:
    a = nodes.a
    channel = _open(nodes, deposit=30)
    a.ok("POST", f"/v1/channels/{channel}/pay", {"amount": 3})
    a.request("GET", "/v1/info", token="wrong")
    code, text = a.request("GET", "/metrics")
    assert code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    assert all(name.startswith("bfs_smr_") for name in names), names
    assert samples["bfs_smr_updates_committed_total", ()] >= 2
    assert samples["bfs_smr_commands_committed_total", ()] >= 1
    assert samples["bfs_smr_store_commit_seconds_count", ()] >= 2
    assert samples["bfs_smr_links_up", ()] == 1
    assert samples["bfs_smr_l1_transactions_total", (("kind", "open"),)] >= 1
    assert samples["bfs_smr_refusals_total", (("reason", "api_unauthorized"),)] >= 1
    # Bob funded nothing, and opened nothing on L1.
    _, bob_text = nodes.b.request("GET", "/metrics")
    bob = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(bob_text)
        for s in family.samples
    }
    assert bob["bfs_smr_l1_transactions_total", (("kind", "open"),)] == 0
    assert bob["bfs_smr_commands_committed_total", ()] >= 1


def test_node_url_prints_the_page_with_the_token(nodes: Nodes) -> None:
    url = ok("node", "url", "--data-dir", str(nodes.alice.dir))["url"]
    assert url == f"http://{nodes.a.host}:{nodes.a.port}/#token={nodes.a.token}"
    plain = cli("node", "url", "--data-dir", str(nodes.alice.dir))
    assert plain.code == 0 and plain.stdout.strip() == url


def test_http_on_a_remote_address_is_refused_unless_allowed(tmp_path: Path) -> None:
    result = cli(
        "node", "--data-dir", str(tmp_path / "n"), "--listen", "127.0.0.1:0", "--l1",
        f"local:{tmp_path / 'l1'}", "--http", "0.0.0.0:0",
    )  # fmt: skip
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        "bfs-smr: error: --http 0.0.0.0:0 is not a loopback address (127.0.0.1, ::1, "
        "localhost); give --http-allow-remote to serve the API to the network"
    ]


def test_init_writes_the_token_for_the_owner_only(tmp_path: Path) -> None:
    ok("init", "--data-dir", str(tmp_path / "n"))
    token = tmp_path / "n" / "api.token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text().strip()) == 64


def test_the_openapi_document_names_every_route_and_no_other(nodes: Nodes) -> None:
    api = HttpApi(
        control=None,  # type: ignore[arg-type]
        chans={},
        hub=EventHub(),
        metrics=NodeMetrics(lambda: 0),
        token="0" * 64,
        spawn=lambda coro: None,
    )
    served = api.routes()
    document = nodes.a.ok("GET", "/v1/openapi.json")
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert served == documented


def test_a_node_serves_at_most_64_event_streams(nodes: Nodes) -> None:
    a = nodes.a
    held = []
    try:
        for _ in range(MAX_STREAMS):
            conn = http.client.HTTPConnection(a.host, a.port, timeout=60)
            conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {a.token}"})
            assert conn.getresponse().status == 200
            held.append(conn)
        code, value = a.request("GET", "/v1/events")
        assert code == 503 and value == {"error": "the node is busy: 64 event streams open"}
        assert a.ok("GET", "/v1/info")["channels"] >= 0  # the rest of the API still answers
    finally:
        for conn in held:
            conn.close()
    # The readers went away: their places free (without waiting for a write to fail).
    deadline = time.monotonic() + 30
    while True:
        conn = http.client.HTTPConnection(a.host, a.port, timeout=60)
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {a.token}"})
        status = conn.getresponse().status
        conn.close()
        if status == 200:
            break
        assert time.monotonic() < deadline, "the closed streams' places never freed"
        time.sleep(0.2)


def test_a_slow_event_reader_is_dropped_and_streams_are_bounded() -> None:
    hub = EventHub(max_streams=3, max_queue=5)
    subs = [hub.subscribe() for _ in range(3)]
    assert all(s is not None for s in subs) and hub.subscribe() is None
    slow = subs[0]
    assert slow is not None
    for i in range(6):
        hub.publish("update", lambda i=i: {"channel": "00" * 32, "seq": i})
    assert slow.dropped and not slow._queue  # nothing kept for it any more
    assert hub.subscribe() is not None  # its place is free
    # A stopping node ends every stream at once, without waiting for the keep-alive.
    waiting = hub.subscribe()
    assert waiting is not None
    hub.end_all()
    assert asyncio.run(waiting.get(3600)) is None and waiting.ended
    built = []
    EventHub().publish("update", lambda: built.append(1) or {})
    assert built == []  # nobody listens: the event is not even built
