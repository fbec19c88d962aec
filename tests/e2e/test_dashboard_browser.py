"""The live dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium) against a real ``twistd paychan`` in a subprocess: the token is asked for
once and kept for the tab, the totals and the channels table follow the payments a client makes
(through the event stream the page reads with ``fetch()``), a new channel appears, a client that
goes loses its peer address, the expiry countdown runs, and nothing is loaded from anywhere but
the server. A screenshot is left in the test's tmp dir.

``.ci/run`` installs the browser: this test does not skip when it is missing, it fails."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet import reactor, task, threads

from procs import RemoteClient, ServerProcess
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1100", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def sats(n: int) -> str:
    return f"{n:,} sat"


def _until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shown = driver.execute_script(
            "return ['login-error', 'error', 'status'].map(id => id + ': ' + document.getElementById(id).textContent)"
            " .concat([document.getElementById('channels').outerHTML.slice(0, 2000)])")
        raise AssertionError(f"{what}: not seen in {WAIT} s; the page shows {shown}") from None


async def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Poll the page (selenium's own wait, with a deadline) until ``condition`` holds; on a
    timeout, say what the page showed. In a thread: the client in this test's reactor must go
    on (a connection it closes closes only when the reactor runs)."""
    return await threads.deferToThread(_until, driver, condition, what)


def text(driver: WebDriver, selector: str) -> str:
    """The element's text, read in one script (the page re-renders its rows at every event: an
    element found first and read after may be gone); "" when there is none."""
    found = driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                                  selector)
    return str(found)


def count(driver: WebDriver, selector: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector))


def cell(driver: WebDriver, txid: bytes, column: str) -> str:
    return text(driver, f'#channels tr[data-txid="{display_hex(txid)}"] td.{column}')


async def api_url(data_dir: Path) -> str:
    deadline = time.monotonic() + WAIT
    while not (data_dir / "api.json").exists():
        assert time.monotonic() < deadline, "the server wrote no api.json"
        await task.deferLater(reactor, 0.05, lambda: None)
    return str(json.loads((data_dir / "api.json").read_text())["url"])


@pytest_twisted.ensureDeferred
async def test_dashboard_follows_payments_live(tmp_path: Path, browser: WebDriver) -> None:
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open(fund_blocks=3)
        settings = ClientSettings(channel_value=400_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        first = await client.connect(settings, hashlib.sha256(b"first").digest())
        for _ in range(3):
            await first.pay(2_000)
        second = await client.connect(settings, hashlib.sha256(b"second").digest())
        await second.pay(5_000)
        url = await api_url(server.data_dir)
        token = (server.data_dir / "api.cookie").read_text().strip()
        paid = {first.contract_txid: 1_000 + 3 * 2_000, second.contract_txid: 1_000 + 5_000}  # initial payment 1000

        # The page itself needs no token; the data does.
        browser.get(url + "/")
        await until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the token form")
        browser.find_element(By.ID, "token").send_keys("not-the-token")
        browser.find_element(By.ID, "login-button").click()
        await until(browser, lambda d: "refused" in text(d, "#login-error"), "a refused token said so")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "login-button").click()
        await until(browser, lambda d: count(d, "#channels tbody tr") == 2, "two channels")
        await until(browser, lambda d: text(d, "#status") == "live", "the event stream")
        assert browser.execute_script("return sessionStorage.getItem('paychan-api-token')") == token
        assert cell(browser, first.contract_txid, "paid") == sats(paid[first.contract_txid])
        assert cell(browser, first.contract_txid, "value") == sats(400_000)
        assert cell(browser, first.contract_txid, "remaining") == sats(400_000 - paid[first.contract_txid])
        assert cell(browser, first.contract_txid, "state") == "open"
        assert cell(browser, first.contract_txid, "peer").startswith("127.0.0.1:")
        assert text(browser, "#total-paid") == sats(sum(paid.values()))
        assert text(browser, "#total-locked") == sats(800_000)
        assert text(browser, '#states li[data-state="open"]') == "open 2"
        countdown = cell(browser, first.contract_txid, "expiry")
        assert "h" in countdown or "d" in countdown

        # Payments arrive through the event stream: the row, the totals and the chart follow.
        for _ in range(8):
            await first.pay(1_500)
        paid[first.contract_txid] += 8 * 1_500
        await until(browser, lambda d: cell(d, first.contract_txid, "paid") == sats(paid[first.contract_txid]),
              "the row followed the payments")
        assert cell(browser, first.contract_txid, "remaining") == sats(400_000 - paid[first.contract_txid])
        await until(browser, lambda d: text(d, "#total-paid") == sats(sum(paid.values())), "the total followed")
        assert int(text(browser, "#payments-seen")) >= 8
        assert browser.execute_script("return state.buckets.reduce((a, b) => a + b, 0)") >= 8
        await until(browser, lambda d: cell(d, first.contract_txid, "expiry") != countdown, "the countdown runs")

        # A new channel appears; a client that goes loses its peer address.
        third = await client.connect(settings, hashlib.sha256(b"third").digest())
        await third.pay(3_000)
        await until(browser, lambda d: count(d, "#channels tbody tr") == 3, "a third row")
        await until(browser, lambda d: text(d, '#states li[data-state="open"]') == "open 3", "three open")
        await until(browser, lambda d: count(d, "#timeline g.expiry") == 3, "the timeline")
        second.disconnect()
        await until(browser, lambda d: cell(d, second.contract_txid, "peer") == "-", "the peer went")

        # Nothing came from anywhere but the server.
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(name.startswith(url + "/") for name in loaded), loaded

        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # The token is kept for the tab: a reload goes straight to the board.
        browser.refresh()
        await until(browser, lambda d: count(d, "#channels tbody tr") == 3, "the board again")
        assert not browser.find_element(By.ID, "login").is_displayed()
        first.disconnect()
        third.disconnect()
    finally:
        await client.close()
        await server.stop()
