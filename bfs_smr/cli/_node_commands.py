"""The node commands of the ``bfs-smr`` command line: ``l1``, ``init``, ``node``, ``channel``.

Everything but ``node`` itself is a short-lived client: ``l1`` commands act on the L1
file directly, ``channel`` commands ask the running node through its control endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
from typing import Any

from bfs_smr._errors import LocalError
from bfs_smr._limits import ChannelLimits
from bfs_smr.adapters import evm
from bfs_smr.cli._show import print_human, wait_with_progress
from bfs_smr.plugins import load_l1
from bfs_smr.runtime._logging import configure_logging
from bfs_smr.runtime.node import Node, NodeConfig
from bfs_smr.runtime.node._control import call
from bfs_smr.runtime.node._towers import parse_tower
from bfs_smr.runtime.store._datadir import DataDir, parse_hex_id

__all__ = [
    "L1_HELP",
    "NODE_COMMANDS",
    "add_node_commands",
    "evm_address",
    "node_config",
    "positive",
    "print_human",
    "run_node_command",
]

NODE_COMMANDS = ("l1", "init", "node", "channel")

#: Environment variables that stand for ``--data-dir`` and ``--l1`` when not given.
DATA_DIR_ENV, L1_ENV = "BFS_SMR_DATA_DIR", "BFS_SMR_L1"

CHANNEL_HELP = "a channel id, or any unique prefix of it of 8 or more hex digits"

L1_HELP = (
    "the L1, SCHEME:WHERE: local:PATH (a shared local L1 file), evm:URL (a JSON-RPC "
    "node), or the scheme of an installed L1 plug-in (docs/l1-adapters.md)"
)
#: The node's defaults, as :class:`NodeConfig` sets them: each ``node`` flag's default.
_NODE_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(NodeConfig)
}


def _amount(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def positive(text: str) -> int:
    value = _amount(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(DATA_DIR_ENV) or None
    parser.add_argument(
        "--data-dir",
        required=default is None,
        default=default,
        metavar="DIR",
        help=f"the node's data directory (default: ${DATA_DIR_ENV}"
        + (f", now {default})" if default else ", unset)"),
    )


def _add_l1(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    default = os.environ.get(L1_ENV) or None
    parser.add_argument(
        "--l1",
        required=required and default is None,
        default=default,
        metavar="SPEC",
        help=f"{L1_HELP} (default: ${L1_ENV}" + (f", now {default})" if default else ", unset)"),
    )


def add_node_commands(sub: Any) -> None:
    l1 = sub.add_parser("l1", help="create, fund and inspect a shared L1")
    l1_sub = l1.add_subparsers(dest="l1_command", required=True, parser_class=type(l1))
    init = l1_sub.add_parser(
        "init", help="create a local L1 file, or deploy the adjudicator on an EVM chain"
    )
    _add_l1(init)
    init.add_argument(
        "--window",
        type=_amount,
        default=None,
        metavar="SECONDS",
        help="challenge window of channels on a local L1 (default 60)",
    )
    init.add_argument("--chain-id", default=None, help="a local L1's chain id (default: random)")
    fund = l1_sub.add_parser(
        "fund", help="credit an account: a local L1's faucet, or the EVM node's first account"
    )
    _add_l1(fund)
    fund.add_argument(
        "node_id", metavar="ACCOUNT", help="a node id (local L1) or a node's evm_address (EVM)"
    )
    fund.add_argument("amount", type=_amount, metavar="AMOUNT")
    bal = l1_sub.add_parser("balance", help="an account's unlocked L1 balance")
    _add_l1(bal)
    bal.add_argument("node_id", metavar="ACCOUNT")
    for p in (init, fund, bal):
        p.add_argument("--json", action="store_true")

    ini = sub.add_parser("init", help="create a node's data directory (identity and secret)")
    _add_data_dir(ini)
    ini.add_argument(
        "--new-store",
        action="store_true",
        help="give the node in DIR a new, empty channel store, if it has none (its "
        "channels are then forgotten: restore the old store from a backup if you can)",
    )
    ini.add_argument("--json", action="store_true")

    node = sub.add_parser(
        "node",
        help="run a node in the foreground (Ctrl-C stops it); `node url`: its web page's URL",
    )
    node.add_argument(
        "action",
        nargs="?",
        choices=["url"],
        help="url: print http://HOST:PORT/#token=TOKEN for the node running on DIR (--http)",
    )
    _add_data_dir(node)
    # (Required to run a node; checked in _node so that `node url` needs neither.)
    node.add_argument("--listen", metavar="HOST:PORT")
    _add_l1(node, required=False)
    node.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="serve the HTTP API, event stream, metrics and web page here (loopback only "
        "unless --http-allow-remote; docs/http-api.md)",
    )
    node.add_argument(
        "--http-allow-remote",
        action="store_true",
        help="let --http listen on a non-loopback address (put TLS in front of it)",
    )
    node.add_argument(
        "--allow-peer",
        action="append",
        default=None,
        metavar="NODE_ID",
        help="accept connections, and channels, only from these nodes (repeatable; the "
        "nodes this node dials may connect too)",
    )
    node.add_argument(
        "--max-window",
        type=positive,
        default=_NODE_DEFAULTS["max_window"],
        metavar="SECONDS",
        help="the longest challenge window accepted in a channel a peer opens "
        f"(default {_NODE_DEFAULTS['max_window']:,}: {_NODE_DEFAULTS['max_window'] / 86_400:g} "
        "days)",
    )
    node.add_argument(
        "--max-inbound-deposit",
        type=_amount,
        default=_NODE_DEFAULTS["max_inbound_deposit"],
        metavar="AMOUNT",
        help="the most this node deposits into a channel a peer opens (default %(default)s)",
    )
    node.add_argument(
        "--accept-app",
        action="append",
        default=None,  # (appended to: the default set is NodeConfig's, used if none given)
        metavar="NAME",
        help="an app a peer may open a channel for (repeatable; default: "
        f"{', '.join(sorted(_NODE_DEFAULTS['accept_apps']))})",
    )
    node.add_argument(
        "--max-control-connections",
        type=positive,
        default=_NODE_DEFAULTS["max_control_connections"],
        metavar="N",
        help="control connections served at once (default %(default)s)",
    )
    node.add_argument(
        "--max-stranger-links",
        type=positive,
        default=_NODE_DEFAULTS["max_stranger_links"],
        metavar="N",
        help="links kept from peers that hold no channel with this node (default %(default)s)",
    )
    node.add_argument(
        "--max-channels-per-peer",
        type=_amount,
        default=_NODE_DEFAULTS["max_channels_per_peer"],
        metavar="N",
        help="channels one peer may open with this node "
        f"(default {_NODE_DEFAULTS['max_channels_per_peer']:,})",
    )
    node.add_argument(
        "--max-in-flight",
        type=positive,
        default=_NODE_DEFAULTS["limits"].max_in_flight,
        metavar="N",
        help="updates a channel this node sequences may have awaiting the peer "
        "(default %(default)s)",
    )
    node.add_argument(
        "--max-batch",
        type=positive,
        default=_NODE_DEFAULTS["limits"].max_batch,
        metavar="N",
        help="commands per update when they queue up under load (default %(default)s; 1: never)",
    )
    node.add_argument(
        "--window",
        type=_amount,
        default=_NODE_DEFAULTS["window"],
        metavar="SECONDS",
        help="challenge window of the channels this node opens, and the least it accepts "
        "(default: the local L1's; 86,400 on the EVM)",
    )
    node.add_argument(
        "--tower",
        action="append",
        default=[],
        metavar="TOWER_ID@HOST:PORT",
        help="a watchtower to keep up to date for all this node's channels, so that it "
        "refutes a stale close while this node is down (repeatable; docs/watchtower.md)",
    )
    node.add_argument("--log-json", action="store_true", help="log one JSON object a line")
    node.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    node.add_argument("--json", action="store_true")

    ch = sub.add_parser(
        "channel",
        help="open, use and close channels through a running node",
        description="Drive the node running on --data-dir. CHANNEL is "
        + CHANNEL_HELP
        + f". ${DATA_DIR_ENV} stands for --data-dir.",
    )
    ch_sub = ch.add_subparsers(dest="channel_command", required=True, parser_class=type(ch))
    op = ch_sub.add_parser("open", help="open a channel with a peer; returns once open on L1")
    op.add_argument("--peer", required=True, metavar="HOST:PORT")
    op.add_argument("--peer-id", required=True, metavar="NODE_ID")
    op.add_argument("--app", default="payments")
    op.add_argument("--deposit", type=_amount, required=True, metavar="N")
    op.add_argument("--peer-deposit", type=_amount, default=0, metavar="N")
    op.add_argument("--options", default="{}", metavar="JSON", help="app options")
    pay = ch_sub.add_parser("pay", help="pay the peer; returns once doubly signed and durable")
    pay.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    pay.add_argument("amount", type=_amount, metavar="AMOUNT")
    send = ch_sub.add_parser("send", help="issue any app command, e.g. a tic-tac-toe move")
    send.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    for p in (pay, send):
        p.add_argument(
            "--count",
            type=_amount,
            default=1,
            metavar="N",
            help="N copies in one update (a batch: all committed together, or none)",
        )
    send.add_argument("command_json", metavar="COMMAND_JSON")
    show = ch_sub.add_parser(
        "show", help="a channel: the app's view (a game's board), outcome, deadline, pending"
    )
    show.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    lst = ch_sub.add_parser("list", help="the node's channels not yet paid out on L1")
    lst.add_argument("--all", action="store_true", help="settled channels too")
    close = ch_sub.add_parser("close", help="close; returns once L1 has paid out")
    close.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    close.add_argument(
        "--unilateral",
        action="store_true",
        help="close on L1 without the peer (waits out the challenge window)",
    )
    for p in (op, pay, send, show, close, lst):
        _add_data_dir(p)
        p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS")
        p.add_argument("--json", action="store_true")


def run_node_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run one of :data:`NODE_COMMANDS`; returns the result to print."""
    if args.command == "l1":
        return _l1(args)
    if args.command == "init":
        return _init(args)
    if args.command == "node":
        return _node(args)
    return _channel(args)


def _init(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = DataDir(args.data_dir)
    if args.new_store:
        data_dir.new_store()
        return {"node_id": data_dir.identity().public_key.hex(), "new_store": True}
    result = {"node_id": data_dir.init().hex()}
    address = evm_address(data_dir.l1_key())
    if address is not None:
        result["evm_address"] = address
    return result


def evm_address(secret: bytes) -> str | None:
    """The Ethereum address of the node's secp256k1 key, or None without the evm extra
    (loads the signature scheme only, not web3)."""
    try:
        return "0x" + bytes(evm.Secp256k1().public_key(secret)).hex()
    except ImportError:
        return None


def _l1(args: argparse.Namespace) -> dict[str, Any]:
    """``l1 init|fund|balance``: whatever ``--l1 SCHEME:…`` names, through its plug-in."""
    plugin = load_l1(args.l1)
    if args.l1_command == "init":
        return {"l1": args.l1, **plugin.init(window=args.window, chain_id=args.chain_id)}
    account = plugin.parse_account(args.node_id)
    if args.l1_command == "fund":
        plugin.fund(account, args.amount)
    balance = plugin.balance(account)
    # An EVM account is an address (a node's evm_address), elsewhere a node id.
    label = "address" if args.l1.partition(":")[0] == "evm" else "node_id"
    return {label: plugin.format_account(account), "balance": balance}


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The :class:`NodeConfig` the ``node`` command's flags ask for.

    Raises:
        LocalError: a bad option, in the flags' words.
    """
    allow = None if args.allow_peer is None else frozenset(map(parse_hex_id, args.allow_peer))
    accept_apps = args.accept_app
    return NodeConfig(
        listen=args.listen,
        l1=args.l1,
        allow=allow,
        limits=ChannelLimits(max_in_flight=args.max_in_flight, max_batch=args.max_batch),
        max_channels_per_peer=args.max_channels_per_peer,
        window=args.window,
        max_window=args.max_window,
        max_inbound_deposit=args.max_inbound_deposit,
        accept_apps=_NODE_DEFAULTS["accept_apps"]
        if accept_apps is None
        else frozenset(accept_apps),
        max_control_connections=args.max_control_connections,
        max_stranger_links=args.max_stranger_links,
        towers=tuple(parse_tower(t) for t in args.tower),
        http=args.http,
        http_allow_remote=args.http_allow_remote,
    )


def _node(args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "url":
        return _node_url(args)
    for flag, value in (("--listen", args.listen), (f"--l1 (or ${L1_ENV})", args.l1)):
        if value is None:
            raise LocalError(f"the node needs {flag}")
    config = node_config(args)
    configure_logging(json=args.log_json, level=args.log_level)
    node = Node(args.data_dir, config)

    def ready(n: Node) -> None:
        info: dict[str, Any] = {
            "node_id": n.node_id.hex(),
            "listen": f"{n.listen[0]}:{n.port}",
            "ready": True,
        }
        if n.http_address is not None:
            info["http"] = "{}:{}".format(*n.http_address)
        print(
            json.dumps(info)
            if args.json
            else f"node {info['node_id']} listening on {info['listen']}",
            flush=True,
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.stop)
        await node.run(ready)

    asyncio.run(main())
    return {"node_id": node.node_id.hex(), "stopped": True}


def _node_url(args: argparse.Namespace) -> dict[str, Any]:
    """``node url``: the running node's page, with its API token in the fragment (which a
    browser never sends to the server)."""
    data_dir = DataDir(args.data_dir)
    http = data_dir.control().get("http")
    if not http:
        raise LocalError(f"the node on {data_dir.path} serves no HTTP; start it with --http")
    url = f"http://{http}/#token={data_dir.api_token()}"
    if not args.json:
        print(url, flush=True)
    return {"url": url, "http": http}


def _channel(args: argparse.Namespace) -> dict[str, Any]:
    command = args.channel_command
    request: dict[str, Any] = {}
    if command == "open":
        try:
            options = json.loads(args.options)
        except ValueError:
            raise LocalError(f"--options is not JSON: {args.options!r}") from None
        request = {
            "peer": args.peer,
            "peer_id": args.peer_id,
            "app": args.app,
            "deposit": args.deposit,
            "peer_deposit": args.peer_deposit,
            "options": options,
        }
    elif command == "pay":
        request = {"channel": args.channel, "amount": args.amount, "count": args.count}
    elif command == "send":
        try:
            cmd = json.loads(args.command_json)
        except ValueError:
            raise LocalError(f"COMMAND_JSON is not JSON: {args.command_json!r}") from None
        request = {"channel": args.channel, "command": cmd, "count": args.count}
    elif command == "list":
        request = {"all": args.all}
    elif command in ("show", "close"):
        request = {"channel": args.channel, "unilateral": getattr(args, "unilateral", False)}
    default_timeout = {"close": 600.0, "open": 60.0}.get(command, 30.0)
    timeout = args.timeout or default_timeout
    request["timeout"] = timeout
    if command == "close" and not args.json:
        closed = wait_with_progress(
            lambda: call(args.data_dir, command, request, timeout=timeout + 10),
            lambda: call(args.data_dir, "show", {"channel": args.channel}, timeout=5),
        )
        # For people: which payout is whose ("you", "peer"), from this node's own id.
        me = DataDir(args.data_dir).identity().public_key.hex()
        peers = [k for k in closed.get("payouts", {}) if k != me]
        return {**closed, "peer": peers[0]} if len(peers) == 1 else closed
    return call(args.data_dir, command, request, timeout=timeout + 10)
