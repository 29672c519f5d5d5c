"""The node's configuration record, the command line's mapping onto it, the control
operations' table and the node's bound loggers: no process is started."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from bfs_smr.adapters.local import LocalL1

from bfs_smr import ChannelLimits, LocalError
from bfs_smr.cli import _build_parser
from bfs_smr.cli._node_commands import node_config
from bfs_smr.runtime._logging import configure_logging, get_logger, short_id
from bfs_smr.runtime.node import Node, NodeConfig
from bfs_smr.runtime.node._ops import ControlOps
from bfs_smr.runtime.store._datadir import DataDir
from bfs_smr.runtime.transport import TransportConfig

NEEDED = ("node", "--data-dir", "d", "--listen", "127.0.0.1:0", "--l1", "local:l1")


def _config(*flags: str) -> NodeConfig:
    return node_config(_build_parser().parse_args([*NEEDED, *flags]))


def test_the_node_commands_defaults_are_node_configs() -> None:
    assert _config() == NodeConfig(listen="127.0.0.1:0", l1="local:l1")
    assert _config().limits == ChannelLimits()


def test_every_node_flag_lands_in_its_field() -> None:
    peer = "ab" * 32
    config = _config(
        "--allow-peer", peer, "--max-window", "100", "--max-inbound-deposit", "7",
        "--accept-app", "counter", "--accept-app", "payments",
        "--max-control-connections", "3", "--max-stranger-links", "4",
        "--max-channels-per-peer", "5", "--max-in-flight", "6", "--max-batch", "8",
        "--window", "9",
    )  # fmt: skip
    assert config == NodeConfig(
        listen="127.0.0.1:0",
        l1="local:l1",
        allow=frozenset({bytes.fromhex(peer)}),
        max_window=100,
        max_inbound_deposit=7,
        accept_apps=frozenset({"counter", "payments"}),
        max_control_connections=3,
        max_stranger_links=4,
        max_channels_per_peer=5,
        limits=ChannelLimits(max_in_flight=6, max_batch=8),
        window=9,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"listen": "nowhere"}, "expected HOST:PORT, got 'nowhere'"),
        ({"window": 100, "max_window": 99}, "--window 100 is over --max-window 99"),
        ({"max_inbound_deposit": -1}, "--max-inbound-deposit must not be negative"),
        ({"accept_apps": ["no-such-app"]}, "unknown app 'no-such-app'"),
        ({"max_control_connections": 0}, "--max-control-connections must be at least 1"),
        ({"max_stranger_links": 0}, "--max-stranger-links must be at least 1"),
    ],
)
def test_a_bad_option_is_refused_in_the_flags_words(fields: dict[str, Any], message: str) -> None:
    given: dict[str, Any] = {"listen": "127.0.0.1:0", "l1": "local:l1", **fields}
    with pytest.raises(LocalError, match=message):
        NodeConfig(**given)


def test_a_config_is_immutable_and_keeps_sets_as_frozensets() -> None:
    config = NodeConfig(listen="127.0.0.1:0", l1="local:l1", accept_apps=["payments"])  # type: ignore[arg-type]
    assert config.accept_apps == frozenset({"payments"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_window = 1  # type: ignore[misc]


def test_the_control_table_serves_every_channel_command() -> None:
    """Each ``bfs-smr channel`` subcommand is an op of the table, as are the ``status``
    and ``bench`` ops other clients send; nothing else is."""
    parser = _build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    channel = next(a for a in commands["channel"]._actions if a.dest == "channel_command")
    given = {name: None for name in ("node_id", "listen", "l1_spec", "l1", "thread", "chans")}
    given |= {name: None for name in ("links", "addresses", "store", "load", "effects")}
    ops = ControlOps(**given, watcher=None, signer=SimpleNamespace(public_key=b""))  # type: ignore[arg-type]
    table = ops.table()
    assert set(table) == {*channel.choices, "status", "bench"}
    assert all(callable(handler) for handler in table.values())


def test_a_channels_logger_names_it_and_its_peer_by_short_ids() -> None:
    cid, peer = bytes(range(32)), bytes(range(32, 64))
    with structlog.testing.capture_logs() as logs:
        get_logger("bfs_smr.node", channel=cid, peer=peer).info("something happened", seq=3)
        get_logger("bfs_smr.node", peer=peer).info("link up")
    assert logs[0] == {
        "event": "something happened",
        "log_level": "info",
        "channel": cid.hex()[:16],
        "peer": peer.hex()[:16],
        "seq": 3,
    }
    assert logs[1]["peer"] == short_id(peer) == peer.hex()[:16] and "channel" not in logs[1]


def test_the_nodes_transport_settings_reach_its_links(tmp_path: Path) -> None:
    """NodeConfig.transport is what the node serves with: a connection that never
    completes the handshake is closed after the configured 0.3 s, not the default 5 s."""
    chain = LocalL1.create(tmp_path / "l1.sqlite3", window=2)
    DataDir(tmp_path / "node").init()
    fast = TransportConfig(handshake_timeout=0.3)
    config = NodeConfig(listen="127.0.0.1:0", l1=f"local:{chain.path}", transport=fast)
    assert TransportConfig().handshake_timeout >= 5  # the default would not close it in time

    async def main() -> bytes:
        node = Node(tmp_path / "node", config)
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(node.run(lambda _: ready.set_result(None)))
        await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert ready.done(), "the node did not start"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            try:
                return await asyncio.wait_for(reader.read(), 3)  # b"" once the node closes it
            finally:
                writer.close()
        finally:
            node.stop()
            await asyncio.wait_for(task, 30)

    try:
        assert asyncio.run(main()) == b""
    finally:
        chain.close()


def test_log_lines_go_to_the_stderr_of_the_moment(monkeypatch):
    """configure_logging once ran with the stderr of a test's capture; once that stream was
    closed, every later log line raised ValueError (three tower tests failed in CI, in
    whatever worker had run an in-process CLI command first)."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(level="info")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    get_logger("t").warning("still heard", reason="x")
    assert "still heard" in second.getvalue()
