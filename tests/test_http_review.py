"""Hostile input to the node's operator interfaces (issue 15's review): what a peer, a
local process or a web page can make the HTTP API, the event stream and ``list`` do.

Real node processes (as in tests/test_http_api.py). One app here is installed for the
nodes through an entry point on ``PYTHONPATH`` (the way a third-party app is): a counter
whose :meth:`present` fails for some states the app reaches, which the peer can steer
the channel into.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

import bfs_smr.cli as cli_main
from bfs_smr._errors import LocalError
from bfs_smr.plugins import load_l1
from tests.nodeproc import NodeProc, cli, local_l1
from tests.test_http_api import Nodes, Stream, _api

_FRAGILE = '''
from bfs_smr.apps.counter import Counter


class Fragile(Counter):
    """A counter whose view divides by zero at the count 7 (and 15, 23, ...)."""

    name = "fragile"

    def present(self, state, party):
        return {"count": state[0], "per_round": 800 // ((state[0] + 1) % 8)}


class Huge(Counter):
    """A counter whose view holds an integer JSON cannot write (over 4300 digits)."""

    name = "huge"

    def present(self, state, party):
        return {"count": 10 ** (4400 * min(state[0], 1))}
'''


def _install_apps(root: Path) -> str:
    """A directory that, on PYTHONPATH, installs the apps above as a plug-in does."""
    site = root / "site"
    dist = site / "review_apps-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "review_apps.py").write_text(textwrap.dedent(_FRAGILE))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: review-apps\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[bfs_smr.apps]\nfragile = review_apps:Fragile\nhuge = review_apps:Huge\n"
    )
    return str(site)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("review")
    spec = local_l1(root, 5)
    http = ("--http", "127.0.0.1:0")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _install_apps(root)
    try:
        alice = NodeProc(root / "alice", spec, extra=http).start()
        accept = ("--accept-app", "payments", "--accept-app", "fragile", "--accept-app", "huge")
        bob = NodeProc(root / "bob", spec, extra=(*http, *accept)).start()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    plugin = load_l1(spec)
    plugin.fund(plugin.parse_account(alice.node_id), 1 << 60)
    try:
        yield Nodes(spec, alice, bob, _api(alice), _api(bob))
    finally:
        for node in (alice, bob):
            if node.alive():
                node.stop()


def _open(nodes: Nodes, app: str, deposit: int = 10) -> str:
    body = {"peer": nodes.bob.address, "peer_id": nodes.bob.node_id, "deposit": deposit}
    opened = nodes.a.ok("POST", "/v1/channels", {**body, "app": app}, status=201)
    channel: str = opened["channel"]
    return channel


def test_a_state_whose_view_fails_breaks_neither_list_nor_the_node(nodes: Nodes) -> None:
    """The peer steers a channel of an app with a buggy ``present`` to a state it fails
    on: ``list`` (API and command line) still lists every channel, ``show`` of that one
    answers, the event stream goes on and other channels still work."""
    a, b = nodes.a, nodes.b
    payments = _open(nodes, "payments")
    fragile = _open(nodes, "fragile")
    huge = _open(nodes, "huge")
    stream = Stream(a)
    try:
        # The peer's commands: 7 makes Fragile's view divide by zero; 1 makes Huge's
        # view an integer no JSON writer takes.
        b.ok("POST", f"/v1/channels/{fragile}/commands", {"command": {"inc": 7}})
        b.ok("POST", f"/v1/channels/{huge}/commands", {"command": {"inc": 1}})
        for cid in (fragile, huge):
            stream.wait_for("update", channel=cid)
        code, listed = a.request("GET", "/v1/channels")
        assert code == 200, listed
        assert {c["channel"] for c in listed["channels"]} >= {payments, fragile, huge}
        for cid in (fragile, huge):
            code, shown = a.request("GET", f"/v1/channels/{cid}")
            assert code == 200, shown
            assert shown["view"] is None and shown["seq"] >= 1
        result = cli("channel", "list", "--data-dir", str(nodes.alice.dir), "--json")
        assert result.code == 0, result.stderr
        # The node still works, and still tells its stream.
        paid = a.ok("POST", f"/v1/channels/{payments}/pay", {"amount": 1})
        stream.wait_for("update", channel=payments, seq=paid["seq"])
    finally:
        stream.close()
    assert nodes.alice.alive() and nodes.bob.alive()


def test_a_peers_reason_cannot_drive_the_operators_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A peer's words reach the command line's error line (an open's refusal reason, a
    denied close's reason: up to 200 characters of the peer's choosing). Escape sequences
    in them (ESC, BEL, the C1 CSI, bidi overrides) must not reach the terminal raw: they
    could retitle it, write the clipboard (OSC 52) or hide text."""
    hostile = "no\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b31m\u202eevil\r"

    def refuse(args: object) -> object:
        raise LocalError(f"the peer refused the channel: {hostile}")

    monkeypatch.setattr(cli_main, "_run", refuse)
    assert cli_main.main(["channel", "list", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bfs-smr: error: the peer refused the channel: no")
    assert all(ch.isprintable() for ch in err.rstrip("\n")), repr(err)


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.skipif(
    not (CHROMIUM and Path(CHROMEDRIVER).exists())
    and not os.environ.get("BFS_SMR_REQUIRE_BROWSER"),
    reason="no chromium/chromedriver (Debian: chromium, chromium-driver)",
)
def test_the_page_never_pays_an_amount_other_than_the_one_typed(nodes: Nodes) -> None:
    """Amounts past 2**53 (wei on an EVM chain) lose digits in a JavaScript number: the
    page must pay exactly what was typed, or refuse; never a rounded amount."""
    a = nodes.a
    deposit = 1 << 54
    typed = (1 << 53) + 1  # a JavaScript number holds 2**53 here
    channel = _open(nodes, "payments", deposit=deposit)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://{a.host}:{a.port}/#token={a.token}")
        wait = WebDriverWait(driver, 30, poll_frequency=0.05)
        card = wait.until(
            lambda d: (d.find_elements(By.CSS_SELECTOR, f'[data-channel="{channel}"]') or [None])[0]
        )
        amount = card.find_element(By.CSS_SELECTOR, '[data-testid="pay-amount"]')
        amount.send_keys(str(typed) + Keys.ENTER)
        error = card.find_element(By.CSS_SELECTOR, '[data-testid="channel-error"]')
        wait.until(lambda d: error.text or a.ok("GET", f"/v1/channels/{channel}")["seq"] > 0)
        said = error.text
    finally:
        driver.quit()
    shown = a.ok("GET", f"/v1/channels/{channel}")
    if shown["seq"] == 0:
        assert "9007199254740991" in said, said
    else:
        assert shown["view"] == {"mine": deposit - typed, "theirs": typed}


def test_a_node_refuses_a_token_others_can_read(tmp_path: Path) -> None:
    """A token file others may read (made by hand under a umask of 022, or copied) gives
    every local user the API: the node says so and does not serve it with that token."""
    spec = local_l1(tmp_path, 5)
    node = NodeProc(tmp_path / "n", spec, extra=("--http", "127.0.0.1:0"))
    token = node.dir / "api.token"
    token.chmod(0o644)
    try:
        with pytest.raises(AssertionError, match="did not start"):
            node.start()
            node.stop()
    finally:
        if node.proc is not None and node.proc.stdout is not None:
            node.proc.stdout.close()
    said = node.log.read_text()
    assert "api.token" in said and "chmod 600" in said, said[-2000:]


def test_options_too_big_for_the_proposal_are_refused_at_once(nodes: Nodes) -> None:
    """Options (any JSON object, under the API's 64 KiB) that do not fit in the message
    proposing the channel (at most 4096 items) were sent anyway: the peer's node took the
    frame as a protocol violation and dropped the link, this node redialled and sent it
    again, thousands of times a second until the open's timeout (up to an hour), each a
    warning in the peer's log. Refused before anything is sent: 400 with the reason."""
    body = {"peer": nodes.bob.address, "peer_id": nodes.bob.node_id, "deposit": 10}
    before = nodes.bob.log.read_text().count("peer broke the protocol")
    code, answer = nodes.a.request(
        "POST", "/v1/channels", {**body, "options": {"a": [0] * 5000}, "timeout": 3}
    )
    assert code == 400, answer
    assert "options" in answer["error"]
    assert nodes.bob.log.read_text().count("peer broke the protocol") == before
