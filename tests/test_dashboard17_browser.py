"""The web dashboard in a real browser (issue 17): headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium, against two real `node start` daemons, Alice's with --ui.

Through the page: log in with a pasted token, connect a peer, open a channel, see it go normal
with its liquidity bar, create an invoice with its QR code and watch it get paid live (the event
stream, no reload), pay Bob's invoice, close the channel; a readonly token can look but not pay.
Every page is photographed at 375 px and 1280 px wide (the path is printed) and must not scroll
sideways at 375 px.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver  # the test extra installs it
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.test_docs17_cli import ENV, ok_json

PAGES = ("overview", "channels", "peers", "payments", "receive", "send")
WIDTHS = (375, 1280)
ARTIFACTS = Path(os.environ.get("LIGHTSPEED_ARTIFACTS", Path(tempfile.gettempdir()) / "artifacts")) / "dashboard17"


class UiDaemon:
    def __init__(self, datadir: Path, chain: Path, *extra: str) -> None:
        self.datadir = datadir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen",
             "127.0.0.1:0", "--api", "127.0.0.1:0", "--chain", str(chain), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError("daemon did not start")
        self.ready: dict[str, str] = json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _browser() -> WebDriver:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert binary and driver_path, ("Debian's chromium and chromium-driver are needed (.ci/run installs them: "
                                    "apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _width(driver: WebDriver, width: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900 if width > 500 else 812, "deviceScaleFactor": 1, "mobile": width < 500})


def _until(what: str, check: Callable[[], Any], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # the element is not there yet, or being replaced
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _go(driver: WebDriver, page: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'nav a[data-page="{page}"]').click()
    _until(f"page {page}", lambda: driver.find_element(By.ID, f"page-{page}").is_displayed())


def _fill(driver: WebDriver, field: str, value: str) -> None:
    element = driver.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def _notice(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "notice").text)


def _photograph_every_page(driver: WebDriver, tag: str) -> list[Path]:
    shots = []
    for width in WIDTHS:
        _width(driver, width)
        for page in PAGES:
            _go(driver, page)
            time.sleep(0.3)  # the page's data arrives
            scroll, inner = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert inner == width, (page, width, inner)
            assert scroll <= inner, f"{page} scrolls sideways at {width} px: {scroll} > {inner}"
            path = ARTIFACTS / f"{tag}-{page}-{width}px.png"
            assert driver.save_screenshot(str(path)), path
            shots.append(path)
    _width(driver, 1280)
    return shots


@pytest.mark.slow
def test_the_dashboard_drives_a_node_in_chromium(browser: WebDriver, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():  # shown in a passing run too
        print(f"\ndashboard screenshots: {ARTIFACTS}")
    chain = tmp_path / "chain.sqlite"
    alice = UiDaemon(tmp_path / "alice", chain, "--ui")
    bob = UiDaemon(tmp_path / "bob", chain)
    try:
        a, b = str(alice.datadir), str(bob.datadir)
        ui = alice.ready["ui"]
        assert ui == f"http://{alice.ready['api']}/ui/"
        page = httpx.get(ui, timeout=10)  # the page holds no secret: served without a token
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        assert httpx.get(f"http://{bob.ready['api']}/ui/", timeout=10).status_code == 401  # no --ui: no page
        ok_json("fund", "2000000sat", "--datadir", a)

        driver = browser
        driver.get(ui)
        _until("the login form", lambda: driver.find_element(By.ID, "login").is_displayed())
        _width(driver, 375)
        driver.save_screenshot(str(ARTIFACTS / "login-375px.png"))
        _width(driver, 1280)
        driver.save_screenshot(str(ARTIFACTS / "login-1280px.png"))
        _fill(driver, "token", "lsc1.not.a-token")
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        _until("the refusal", lambda: "malformed" in driver.find_element(By.ID, "login-error").text)
        admin_token = (alice.datadir / "api_token").read_text().strip()
        _fill(driver, "token", admin_token)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        _until("the overview", lambda: alice.ready["node_id"] in driver.find_element(By.ID, "node-info").text)
        assert driver.execute_script("return sessionStorage.getItem('lightspeed.token')") == admin_token
        _until("the live event stream", lambda: driver.find_element(By.ID, "live").text == "live")
        _until("the wallet balance", lambda: "2,000,000 sat" in driver.find_element(By.ID, "balances").text)

        # Connect to Bob and open a channel, through the forms.
        _go(driver, "peers")
        _fill(driver, "connect-uri", f"{bob.ready['node_id']}@{bob.ready['listen']}")
        driver.find_element(By.CSS_SELECTOR, "#connect-form button").click()
        _until("Bob in the peer list", lambda: bob.ready["node_id"] in driver.find_element(By.ID, "peer-list").text)
        _go(driver, "channels")
        _fill(driver, "open-node", bob.ready["node_id"])
        _fill(driver, "open-amount", "1000000")
        _fill(driver, "open-push", "100000000")
        driver.find_element(By.CSS_SELECTOR, "#open-form button").click()
        _until("the funding notice", lambda: "funding transaction" in _notice(driver))
        _until("the opening channel", lambda: "awaiting confirmations" in driver.find_element(By.ID, "channel-list").text)
        ok_json("chain", "mine", "3", "--datadir", a)
        _until("the channel to be normal", lambda: (_go(driver, "channels"), driver.find_elements(
            By.CSS_SELECTOR, ".channel .state.normal"))[1], timeout_s=45)
        bars = driver.find_elements(By.CSS_SELECTOR, ".channel .bar span")
        widths = [float(bar.value_of_css_property("width").rstrip("px")) for bar in bars]
        assert len(widths) == 2 and widths[0] > widths[1] * 8, widths  # 900,000 sat ours, 100,000 theirs

        # Receive: an invoice with its QR code, paid by Bob; the page learns it from the event stream.
        _go(driver, "receive")
        _fill(driver, "invoice-amount", "2500")
        _fill(driver, "invoice-description", "dashboard tea")
        driver.find_element(By.CSS_SELECTOR, "#invoice-form button").click()
        invoice = _until("the invoice", lambda: driver.find_element(By.ID, "invoice-text").text)
        assert invoice.startswith("lnbcrt")
        qr = driver.find_element(By.ID, "invoice-qr")
        assert qr.get_attribute("src").startswith("data:image/svg+xml")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", qr) > 100
        paid = ok_json("pay", invoice, "--datadir", b)
        assert paid["status"] == "succeeded"
        _until("the live payment notice", lambda: "Payment received: 2,500 sat" in _notice(driver))
        _until("the invoice shown paid", lambda: driver.find_element(By.ID, "invoice-status").text == "paid")

        # Send: pay Bob's invoice from the page.
        bobs = ok_json("invoice", "new", "1234sat", "from the page", "--datadir", b)
        _go(driver, "send")
        _fill(driver, "pay-invoice", bobs["invoice"])
        driver.find_element(By.CSS_SELECTOR, "#pay-form button").click()
        _until("the payment result", lambda: "succeeded" in driver.find_element(By.ID, "pay-result").text)
        assert "1,234 sat" in driver.find_element(By.ID, "pay-result").text
        assert ok_json("invoice", "lookup", bobs["payment_hash"], "--datadir", b)["status"] == "paid"

        shots = _photograph_every_page(driver, "admin")
        assert len(shots) == len(PAGES) * len(WIDTHS)
        _go(driver, "payments")
        text = driver.find_element(By.ID, "payment-list").text
        assert "Received 2,500 sat" in text and "Sent 1,234 sat" in text

        # Close the channel (two clicks: the first arms the button).
        _go(driver, "channels")
        # The list re-renders (live events, the 5 s poll): find the button again at every step.
        close_button = ".channel button.close"
        _until("the first click", lambda: (driver.find_element(By.CSS_SELECTOR, close_button).click(), 1))
        _until("the armed button", lambda: driver.find_element(By.CSS_SELECTOR, close_button).text == "Confirm close")
        _until("the second click", lambda: (driver.find_element(By.CSS_SELECTOR, close_button).click(), 1))
        _until("the closing notice", lambda: "closing transaction" in _notice(driver), timeout_s=45)
        _until("the channel shown closed", lambda: driver.find_elements(By.CSS_SELECTOR, ".channel .state.closed"))

        # A readonly token sees the node but cannot pay: the page shows the API's 403 reason.
        readonly = ok_json("token", "create", "--scope", "readonly", "--datadir", a)["token"]
        driver.find_element(By.ID, "logout").click()
        assert driver.execute_script("return sessionStorage.getItem('lightspeed.token')") is None
        _fill(driver, "token", readonly)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        _until("the app", lambda: driver.find_element(By.ID, "app").is_displayed())
        _go(driver, "overview")
        _until("the overview", lambda: alice.ready["node_id"] in driver.find_element(By.ID, "node-info").text)
        _go(driver, "send")
        _fill(driver, "pay-invoice", ok_json("invoice", "new", "1sat", "no", "--datadir", b)["invoice"])
        driver.find_element(By.CSS_SELECTOR, "#pay-form button").click()
        _until("the 403 reason", lambda: "this route needs pay" in _notice(driver))
        _photograph_every_page(driver, "readonly")
    finally:
        alice.stop()
        bob.stop()
