"""The node's web page in a real browser: two node processes, two headless Chromium windows.

Each node runs with ``--http``; each window opens the link ``bfs-smr node url`` prints
(the API token in the fragment). The opener's page opens a channel through its form; the
two pages play a whole game of tic-tac-toe by clicking cells in turn, each page's board
changing only through its node's event stream; the loser's page closes the channel and
the payouts are read from the local L1 file. Payments: a payment made in one page shows
in both pages' balances. Nothing is mocked and nothing sleeps: every wait is for
something to show in a page.

Chromium and its driver come from Debian's packages (``chromium``, ``chromium-driver``),
which CI installs (.ci/run); elsewhere the test is skipped unless
``BFS_SMR_REQUIRE_BROWSER=1`` says they must be there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.nodeproc import NodeProc, cli, local_l1, ok

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (CHROMIUM and Path(CHROMEDRIVER).exists()):
    if os.environ.get("BFS_SMR_REQUIRE_BROWSER"):
        raise RuntimeError(
            "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        )
    pytest.skip(
        "no chromium/chromedriver (Debian: chromium, chromium-driver)", allow_module_level=True
    )

from selenium import webdriver  # noqa: E402 - after the skip
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WINDOW = 5  # the local L1's challenge window (s): only a unilateral close waits it out
FUND = 1_000
WAIT = 30.0  # the longest any one thing may take to show in a page
T = TypeVar("T")


def _browser(width: int, height: int) -> WebDriver:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    if width < 500:  # below the smallest window Chromium makes: a phone's screen
        metrics = {"width": width, "height": height, "pixelRatio": 1.0}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@dataclass
class Page:
    """One node's page in one browser window."""

    name: str
    driver: WebDriver
    node: NodeProc

    def until(self, what: str, check: Callable[[], T | bool | None]) -> T:
        def attempt(_: Any) -> Any:
            try:
                return check()
            except StaleElementReferenceException:
                return False

        wait = WebDriverWait(self.driver, WAIT, poll_frequency=0.05)
        return wait.until(attempt, f"{self.name}'s page: {what}")  # type: ignore[no-any-return]

    def find(self, testid: str, within: WebElement | None = None) -> WebElement:
        root: Any = within or self.driver
        return root.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')  # type: ignore[no-any-return]

    def channel(self, cid: str) -> WebElement:
        def shown() -> WebElement | None:
            found = self.driver.find_elements(By.CSS_SELECTOR, f'[data-channel="{cid}"]')
            return found[0] if found else None

        return self.until(f"channel {cid[:12]} shown", shown)

    def text(self, cid: str, testid: str) -> str:
        return self.find(testid, self.channel(cid)).text

    def wait_text(self, cid: str, testid: str, expected: str) -> None:
        self.until(
            f"{testid} of {cid[:12]} is {expected!r}", lambda: self.text(cid, testid) == expected
        )

    def channel_ids(self) -> set[str]:
        items = self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="channel"]')
        return {item.get_attribute("data-channel") or "" for item in items}

    def open_channel(self, peer: NodeProc, app: str, deposit: int, peer_deposit: int) -> str:
        """Fill and send the open form; the new channel's id once the page shows it."""
        before = self.channel_ids()
        for testid, value in (
            ("open-peer", peer.address),
            ("open-peer-id", peer.node_id),
            ("open-deposit", str(deposit)),
            ("open-peer-deposit", str(peer_deposit)),
        ):
            field = self.find(testid)
            field.clear()
            field.send_keys(value)
        Select(self.find("open-app")).select_by_value(app)
        self.find("open-submit").click()
        new: set[str] = self.until("the opened channel shown", lambda: self.channel_ids() - before)
        (cid,) = new
        assert len(cid) == 64 and self.text(cid, "channel-id") == cid  # the full id
        return cid

    def cell(self, cid: str, index: int) -> WebElement:
        return self.find(f"cell-{index}", self.channel(cid))

    def error(self, cid: str) -> str:
        error = self.find("channel-error", self.channel(cid))
        return error.text if error.is_displayed() else ""


#: Bob's node takes payments and games with a stake of 10 from others.
BOB_POLICY = (
    "--accept-app",
    "payments",
    "--accept-app",
    "tictactoe",
    "--max-inbound-deposit",
    "10",
)
#: Each window's size: Alice's is a desktop's; Bob's a phone's, 360 px wide.
SCREENS = {"alice": (1000, 1100), "bob": (360, 1400)}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Page, Page, str]]:
    """Alice's and Bob's nodes, each with its HTTP API, and a browser window on each
    node's page; and the L1's ``--l1`` spec. (Nodes and browsers start side by side.)"""
    tmp = tmp_path_factory.mktemp("web")
    l1 = local_l1(tmp, WINDOW)
    nodes: dict[str, NodeProc] = {}
    drivers: dict[str, WebDriver] = {}

    def node(name: str) -> None:
        made = NodeProc(tmp / name, l1, extra=("--http", "127.0.0.1:0"))
        if name == "bob":
            made.extra += BOB_POLICY
        ok("l1", "fund", "--l1", l1, made.node_id, str(FUND))
        nodes[name] = made
        made.start()

    def browser(name: str) -> None:
        drivers[name] = _browser(*SCREENS[name])

    try:
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(job, name) for job in (node, browser) for name in SCREENS]
        for job in jobs:
            job.result()
        made = [Page(name, drivers[name], nodes[name]) for name in SCREENS]
        with ThreadPoolExecutor(2) as pool:
            for loaded in [pool.submit(_load, page) for page in made]:
                loaded.result()
        yield made[0], made[1], l1
        # No script error, missing file or policy violation in either page's console (but
        # the overdraft's 409, which the page shows).
        for page in made:
            errors = [
                entry
                for entry in page.driver.get_log("browser")
                if entry["level"] == "SEVERE" and "status of 409" not in entry["message"]
            ]
            assert not errors, f"{page.name}'s page: {errors}"
    finally:
        for driver in drivers.values():
            driver.quit()
        for proc in nodes.values():
            if proc.alive():
                assert proc.stop() == 0, proc.log.read_text()[-3000:]


def _url(node: NodeProc) -> str:
    """The page's link, as an operator gets it: ``bfs-smr node url``."""
    result = cli("node", "url", "--data-dir", str(node.dir))
    assert result.code == 0, result.stderr
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and "#token=" in url, url
    return url


def _load(page: Page) -> None:
    url = _url(page.node)
    base, _, token = url.partition("#token=")
    assert token == (page.node.dir / "api.token").read_text().strip()
    if page.name == "bob":
        # Without a token the page asks for one, and takes the one pasted in.
        page.driver.get(base)
        form = page.until("the token form", lambda: page.find("token-form").is_displayed())
        assert form
        page.find("token-input").send_keys(token)
        page.find("token-submit").click()
    else:
        page.driver.get(url)
    page.until("the node id", lambda: page.find("node-id").text == page.node.node_id)
    page.until("the event stream live", lambda: page.find("stream-status").text == "live")
    # The token left the address bar (it stays in this tab's sessionStorage only).
    assert "token" not in page.driver.current_url
    stored = page.driver.execute_script("return sessionStorage.getItem('bfs-smr.token')")
    assert stored == token
    assert not page.find("token-form").is_displayed()


def test_payments_show_in_both_pages_and_a_unilateral_close_counts_down(
    pages: tuple[Page, Page, str],
) -> None:
    alice, bob, l1 = pages
    cid = alice.open_channel(bob.node, "payments", 100, 0)
    for page, mine, theirs in ((alice, "100", "0"), (bob, "0", "100")):
        page.wait_text(cid, "view-mine", mine)
        page.wait_text(cid, "view-theirs", theirs)
        assert page.text(cid, "channel-app") == "Payments"
    for payer, amount, a_mine in ((alice, 30, 70), (bob, 5, 75)):
        box = payer.channel(cid)
        payer.find("pay-amount", box).send_keys(str(amount))
        payer.find("pay-submit", box).click()
        for page, mine in ((alice, a_mine), (bob, 100 - a_mine)):
            page.wait_text(cid, "view-mine", str(mine))
            page.wait_text(cid, "view-theirs", str(100 - mine))
    # The node's refusal shows as its one-line reason, and nothing changes.
    box = bob.channel(cid)
    bob.find("pay-amount", box).send_keys("1000")
    bob.find("pay-submit", box).click()
    reason = bob.until("the refusal shown", lambda: bob.error(cid))
    assert "overdraft" in reason and "\n" not in reason
    assert bob.text(cid, "view-mine") == "25"
    # Bob's page fits its 360 px window: nothing to scroll sideways.
    width = bob.driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width[0] <= width[1] <= 400, width
    # Alice closes without Bob (the page asks first): the window counts down, then L1 pays.
    before = ok("l1", "balance", "--l1", l1, alice.node.node_id)["balance"]
    alice.find("close-unilateral", alice.channel(cid)).click()
    alice.driver.switch_to.alert.accept()

    def countdown() -> str | None:
        line = alice.find("deadline", alice.channel(cid))
        return line.text if line.is_displayed() else None

    shown = alice.until("the window's countdown", countdown)
    assert shown.startswith("Challenge window ends in 0:0"), shown
    for page, mine in ((alice, 75), (bob, 25)):
        page.wait_text(cid, "channel-payouts", f"Paid out on L1: you {mine}, peer {100 - mine}.")
        assert not page.find("deadline", page.channel(cid)).is_displayed()
    assert ok("l1", "balance", "--l1", l1, alice.node.node_id)["balance"] == before + 75


def test_a_whole_game_played_by_clicking(pages: tuple[Page, Page, str], tmp_path: Path) -> None:
    alice, bob, l1 = pages
    before = {p.name: ok("l1", "balance", "--l1", l1, p.node.node_id)["balance"] for p in pages[:2]}
    cid = alice.open_channel(bob.node, "tictactoe", 10, 10)
    # X (Alice, the opener) takes the top row while O (Bob) plays the middle one.
    moves = [(alice, bob, 0, "X"), (bob, alice, 3, "O"), (alice, bob, 1, "X"),
             (bob, alice, 4, "O"), (alice, bob, 2, "X")]  # fmt: skip
    for mover, other, index, mark in moves:
        mover.until("your move", lambda m=mover: m.text(cid, "game-status").startswith("Your move"))
        assert other.text(cid, "game-status").startswith("Their move")
        # Not the other's turn: none of its cells can be clicked.
        assert not any(other.cell(cid, i).is_enabled() for i in range(9))
        cell = mover.until("the cell enabled", lambda m=mover, i=index: m.cell(cid, i).is_enabled())
        assert cell
        mover.cell(cid, index).click()
        for page in (mover, other):  # the board changes in both pages, through the events
            page.until(
                f"{mark} in cell {index}",
                lambda p=page, i=index, m=mark: p.cell(cid, i).text == m,
            )
    for page, shown, winner in ((alice, "You won!", "you"), (bob, "They won.", "peer")):
        page.wait_text(cid, "game-winner", shown)
        assert page.find("game-winner", page.channel(cid)).get_attribute("data-winner") == winner
        labels = [page.cell(cid, i).get_attribute("aria-label") for i in range(9)]
        assert labels[0] == "Row 1, column 1: X" and labels[8] == "Row 3, column 3: empty"
        assert not any(page.cell(cid, i).is_enabled() for i in range(9))
    for page in (alice, bob):  # the newest channel is listed first, under the node's id
        page.driver.execute_script("window.scrollTo(0, 0)")
        page.driver.save_screenshot(str(tmp_path / f"tictactoe-{page.name}.png"))
    # The loser closes from his page; both pages show the payouts, which L1 paid.
    bob.find("close-coop", bob.channel(cid)).click()
    for page, mine in ((alice, 20), (bob, 0)):
        page.wait_text(cid, "channel-payouts", f"Paid out on L1: you {mine}, peer {20 - mine}.")
    for page, won in ((alice, 10), (bob, -10)):
        after = ok("l1", "balance", "--l1", l1, page.node.node_id)["balance"]
        assert after == before[page.name] + won
