"""L1 adapters are plug-ins: found by the scheme of ``--l1 SCHEME:REST`` in the
``bfs_smr.l1`` entry-point group (or registered explicitly), by the node and the CLI alike.

The last test installs the example third-party package docs/examples/toy_l1 with pip into
a directory of its own and runs two real node processes on it from the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.local import LocalL1Plugin
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import ChannelParams, Ed25519, LocalError, Signer
from bfs_smr.cli import main
from bfs_smr.plugins import (
    KeyProvider,
    L1Connection,
    L1Plugin,
    available_apps,
    available_l1s,
    connect_l1,
    load_app,
    load_l1,
    register_l1,
)
from bfs_smr.plugins import _l1 as registry
from tests.nodeproc import NodeProc, cli, ok, open_channel

TOY_SOURCE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "toy_l1"
IDENTITY = Signer(Ed25519(), bytes(range(32)))


class _BareL1(L1Plugin):
    """A plug-in with only what is required: one in-memory chain per process."""

    chain = MemoryL1(chain_id="bare")

    def __init__(self, where: str) -> None:
        self.where = where

    def connect(
        self, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
    ) -> L1Connection:
        return L1Connection(self.chain.adapter(identity.public_key), identity, window or 5)

    def parse_account(self, text: str) -> bytes:
        return bytes.fromhex(text)


@pytest.fixture
def explicit() -> Iterator[dict[str, Any]]:
    """Registrations made by a test are undone after it."""
    saved = dict(registry._explicit)
    yield registry._explicit
    registry._explicit.clear()
    registry._explicit.update(saved)


# -- the registry -------------------------------------------------------------------------


def test_the_bundled_l1s_are_entry_points_like_any_other() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="bfs_smr.l1")}
    assert found["local"] == "bfs_smr.adapters.local:LocalL1Plugin"
    assert found["evm"] == "bfs_smr.adapters.evm:EvmL1Plugin"
    assert {"local", "evm"} <= set(available_l1s())
    assert isinstance(load_l1("local:/nowhere/l1.sqlite3"), LocalL1Plugin)


def test_an_unknown_scheme_names_the_available_ones() -> None:
    with pytest.raises(LocalError, match=r"unknown L1 'moon' in 'moon:1' \(available: .*local"):
        load_l1("moon:1")
    with pytest.raises(LocalError, match="an L1 is SCHEME:WHERE"):
        load_l1("local")
    with pytest.raises(LocalError, match="an L1 is SCHEME:WHERE"):
        load_l1(":x")


def test_an_explicit_registration_is_found_and_wins(explicit: dict[str, Any]) -> None:
    seen: list[str] = []

    def factory(rest: str) -> L1Plugin:
        seen.append(rest)
        return _BareL1(rest)

    register_l1("bare", factory)
    assert available_l1s()["bare"] is factory
    conn = connect_l1("bare:a:b", IDENTITY, window=7)
    assert seen == ["a:b"]  # the text after the first colon, as it is
    assert conn.window == 7 and conn.signer is IDENTITY
    assert conn.adapter.account == IDENTITY.public_key
    register_l1("local", _BareL1)  # over the entry point of the same name
    assert isinstance(load_l1("local:x"), _BareL1)


def test_registrations_and_factories_are_checked(explicit: dict[str, Any]) -> None:
    for scheme in ("", "Upper", "a:b", "1st"):
        with pytest.raises(LocalError, match="an L1 scheme"):
            register_l1(scheme, _BareL1)
    with pytest.raises(LocalError, match="callable"):
        register_l1("x", "not a factory")  # type: ignore[arg-type]
    register_l1("wrong", lambda rest: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(LocalError, match="returned object, not an L1Plugin"):
        load_l1("wrong:x")


def test_what_a_plugin_leaves_out_is_refused_in_one_line(
    explicit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    register_l1("bare", _BareL1)
    account = "ab" * 32
    for args, what in [
        (["l1", "init", "--l1", "bare:x"], "l1 init"),
        (["l1", "balance", "--l1", "bare:x", account], "l1 balance"),
        (["l1", "fund", "--l1", "bare:x", account, "5"], "l1 fund"),
    ]:
        assert main([*args, "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"bfs-smr: error: this L1 does not support {what}", err


def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, points: str) -> None:
    """Make a distribution ``name`` with the entry points ``points`` importable."""
    dist = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(points)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_plugin_that_fails_to_load_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken third-party entry point: named when asked for, left out of the list."""
    installed(
        tmp_path, monkeypatch, "broken-l1", "[bfs_smr.l1]\nbroken = no_such_module_here:Plugin\n"
    )
    with pytest.raises(LocalError, match=r"the 'broken' L1 plug-in .* does not load"):
        load_l1("broken:x")
    assert "broken" not in available_l1s() and "local" in available_l1s()


def test_a_plugin_whose_factory_raises_is_one_line_at_the_command_line(
    explicit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A third party's bug in its factory is that plug-in's fault, said in one line (exit
    code 2), not a traceback."""

    def factory(rest: str) -> L1Plugin:
        raise ValueError(f"cannot parse {rest}")

    register_l1("buggy", factory)
    with pytest.raises(LocalError, match=r"the 'buggy' L1 plug-in failed on 'x': ValueError"):
        load_l1("buggy:x")
    assert main(["l1", "init", "--l1", "buggy:x", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bfs-smr: error: the 'buggy' L1 plug-in failed") and "\n" not in err


def test_an_app_plugin_that_fails_to_load_is_named_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = "[bfs_smr.apps]\nbroken = no_such_module_here:App\nodd = json:dumps\n"
    installed(tmp_path, monkeypatch, "broken-app", points)
    unusable = "is installed but unusable: its plug-in"
    with pytest.raises(LocalError, match=rf"app 'broken' {unusable} .* does not load"):
        load_app("broken")
    with pytest.raises(LocalError, match=rf"app 'odd' {unusable} .* not a StateMachine"):
        load_app("odd")
    assert {"broken", "odd"}.isdisjoint(available_apps()) and "payments" in available_apps()


# -- the bundled plug-ins -----------------------------------------------------------------


def test_the_local_plugin_connects_a_node_as_its_identity(tmp_path: Path) -> None:
    spec = f"local:{tmp_path / 'l1.sqlite3'}"
    made = load_l1(spec).init(window=30, chain_id="plug")
    assert made == {"chain_id": "plug", "window": 30, "created": True}
    # Again: the L1 there, unchanged (as on the EVM), unless asked for another one.
    assert load_l1(spec).init() == {"chain_id": "plug", "window": 30, "created": False}
    assert load_l1(spec).init(window=30)["created"] is False
    with pytest.raises(LocalError, match="exists already, with a 30 s window"):
        load_l1(spec).init(window=45)
    conn = connect_l1(spec, IDENTITY)
    assert conn.window == 30 and conn.signer is IDENTITY
    assert conn.adapter.account == IDENTITY.public_key
    assert connect_l1(spec, IDENTITY, window=45).window == 45
    with pytest.raises(LocalError, match="at least 30 s"):
        connect_l1(spec, IDENTITY, window=29)
    plugin = load_l1(spec)
    plugin.fund(IDENTITY.public_key, 12)
    assert plugin.balance(IDENTITY.public_key) == 12
    with pytest.raises(LocalError, match="a node id is 64 hex digits"):
        plugin.parse_account("0x12")
    with pytest.raises(LocalError, match="local:PATH"):
        load_l1("local:")


def test_the_evm_plugin_loads_without_web3_and_names_the_extra_it_lacks() -> None:
    script = (
        "import sys\n"
        "from bfs_smr.plugins import available_l1s, load_l1\n"
        "factory = available_l1s()['evm']\n"
        "assert 'web3' not in sys.modules, 'loading the evm entry point imported web3'\n"
        "sys.modules['web3'] = None  # as if the evm extra were not installed\n"
        "try:\n"
        "    load_l1('evm:http://127.0.0.1:8545')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert out.startswith("LocalError the EVM L1 needs the evm extra (pip install 'bfs-smr[evm]')")
    assert len(out.splitlines()) == 1


def test_the_evm_plugin_parses_its_spec_and_accounts() -> None:
    plugin = load_l1("evm:http://127.0.0.1:8545#0x" + "22" * 20)
    assert plugin.parse_account("0x" + "11" * 20) == b"\x11" * 20
    with pytest.raises(LocalError, match="20-byte address"):
        plugin.parse_account("ab" * 32)
    with pytest.raises(LocalError, match=r"evm:http\(s\)://HOST:PORT"):
        load_l1("evm:ftp://x")
    with pytest.raises(LocalError, match="needs its secp256k1 key"):
        plugin.connect(IDENTITY)


def test_channel_params_round_trip_through_plain_data() -> None:
    params = ChannelParams(
        l1=b"x",
        participants=(b"a" * 32, b"b" * 32),
        deposits=(3, 4),
        app="payments",
        app_version=1,
        options={"k": 1},
        nonce=9,
        challenge_window=5,
    )
    again = ChannelParams.from_value(params.to_value())
    assert again == params and again.channel_id == params.channel_id
    for bad in (None, [], params.to_value()[:7], [*params.to_value()[:1], [b"a"], *([0] * 6)]):
        with pytest.raises(ValueError):
            ChannelParams.from_value(bad)


# -- a third-party adapter package, installed with pip, used by two node processes -------


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/examples/toy_l1 installed with pip into a directory of its own."""
    base = tmp_path_factory.mktemp("toy")
    source = base / "src"
    shutil.copytree(TOY_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = base / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    pip += ["--no-build-isolation", "--target", str(site), str(source)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("bfs_smr_toy_l1-*.dist-info"))
    return site


def test_a_pip_installed_adapter_runs_two_nodes_from_the_command_line(
    toy_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"toy:{tmp_path / 'toy.json'}"
    # Not installed where this interpreter looks: the scheme is unknown.
    missing = cli("l1", "init", "--l1", spec, "--json")
    assert missing.code == 2 and "unknown L1 'toy'" in missing.stderr
    # The package's dist-info in a directory on the path is all it takes.
    monkeypatch.setenv("PYTHONPATH", str(toy_site))
    made = ok("l1", "init", "--l1", spec, "--window", "2")
    assert made["l1"] == spec and made["window"] == 2
    alice = NodeProc(tmp_path / "alice", spec)
    bob = NodeProc(tmp_path / "bob", spec, extra=("--max-inbound-deposit", "100"))
    ok("l1", "fund", "--l1", spec, alice.node_id, "1000")
    ok("l1", "fund", "--l1", spec, bob.node_id, "1000")
    alice.start()
    bob.start()
    try:
        channel = open_channel(alice, bob, "--peer-deposit", "100", deposit=500)
        assert ok("l1", "balance", "--l1", spec, alice.node_id)["balance"] == 500
        for amount in (120, 30):
            ok("channel", "pay", "--data-dir", str(alice.dir), channel, str(amount))
        ok("channel", "pay", "--data-dir", str(bob.dir), channel, "20")
        closed = ok("channel", "close", "--data-dir", str(bob.dir), channel)
        assert closed["payouts"] == {alice.node_id: 370, bob.node_id: 230}
        assert ok("l1", "balance", "--l1", spec, alice.node_id)["balance"] == 500 + 370
        assert ok("l1", "balance", "--l1", spec, bob.node_id)["balance"] == 900 + 230
        # The chain is the toy's own file: the channel was opened and settled in it.
        doc = json.loads((tmp_path / "toy.json").read_text())
        assert doc["format"] == "bfs-smr-toy-l1/1"
        assert doc["channels"][channel]["status"] == "settled"
        assert [e["kind"] for e in doc["events"]] == ["opened", "deposited", "settled"]
    finally:
        for node in (alice, bob):
            if node.alive():
                assert node.stop() == 0, node.log.read_text()[-3000:]
