"""The live console in a real headless Chromium, against the whole `make dev` stack.

`python -m devtools.dev` runs on free ports (Google's emulators, the demo relay, the connector,
the notifier under functions-framework, the local FCM endpoint, the console); `make call`'s
script (devtools/send_call.py) makes the calls. Nothing is mocked. Debian's chromium,
chromium-driver and fonts-noto-cjk must be installed: the test fails, not skips, without them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from devtools.processes import free_port, stop_process, wait_for_port
from tests.support import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get install chromium chromium-driver fonts-noto-cjk"
SERVICES = ("firestore", "pubsub", "notifier", "connector", "fcm", "relay", "console")


def require_browser(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER) -> None:
    """Fail (never skip) with what to install when the browser, its driver or a Korean font is
    missing: without the font, Hangul renders as boxes and the screenshot says nothing."""
    missing = [path for path in (chromium, chromedriver) if not shutil.which(path)]
    fonts = ""
    if shutil.which("fc-list"):
        fonts = subprocess.run(
            ["fc-list", ":lang=ko", "family"], capture_output=True, text=True, check=False
        ).stdout
    if not fonts.strip():
        missing.append("a Korean font (fonts-noto-cjk)")
    if missing:
        pytest.fail(f"the console test needs {', '.join(missing)}: {INSTALL}", pytrace=False)


class DevStack:
    """`make dev` (python -m devtools.dev) on free ports, its output in a log file."""

    def __init__(self, log_path: Path) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> DevStack:
        env = {**os.environ, **{f"DEV_{n.upper()}_PORT": str(p) for n, p in self.ports.items()}}
        env.pop("FIRESTORE_EMULATOR_HOST", None)
        env.pop("PUBSUB_EMULATOR_HOST", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.dev"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.ports["console"], timeout=150, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"make dev did not come up: {exc}\n{self.log()[-4000:]}") from exc
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.ports['console']}/"

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.console}api/state", timeout=5) as response:
            return json.load(response)

    def call(self, then: str) -> str:
        """`make call` with the rest of the call played after it; returns its linkedid."""
        done = subprocess.run(
            [
                *[sys.executable, "-m", "devtools.send_call"],
                *["--relay", f"ws://127.0.0.1:{self.ports['relay']}"],
                *["--fcm", f"http://127.0.0.1:{self.ports['fcm']}"],
                *["--wait", "20", "--then", then, "--after", "1"],
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"send_call failed:\n{done.stdout}\n{done.stderr}"
        match = re.search(r"linkedid (\d+\.\d+)", done.stdout)
        assert match, done.stdout
        return match[1]

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)  # dev.py stops its children on SIGTERM
        self._log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[DevStack]:
    dev = DevStack(tmp_path_factory.mktemp("dev") / "dev.log").start()
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1400",
        "--lang=ko-KR",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(driver: WebDriver, css: str, what: str, timeout: float = 30.0) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, css)
        )
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "main").text
        raise AssertionError(f"{what} not shown within {timeout}s; the page:\n{page}") from None


def wait_count(driver: WebDriver, css: str, count: int, what: str, timeout: float = 30.0) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= count
        )
    except TimeoutException:
        shown = len(driver.find_elements(By.CSS_SELECTOR, css))
        raise AssertionError(f"{shown} of {count} {what} shown within {timeout}s") from None


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def assert_not_blank(png: bytes) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.resize((image.width // 2, image.height // 2))
    counts = small.getcolors(small.width * small.height) or []
    colours = len(counts)
    inked = sum(n for n, (r, g, b) in counts if r + g + b < 600) / (small.width * small.height)
    assert colours > 300, f"screenshot has only {colours} distinct colours"
    assert inked > 0.05, f"screenshot is {1 - inked:.0%} white"


def test_require_browser_fails_clearly_without_chromium(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium chromium-driver"):
        require_browser(str(tmp_path / "no-chromium"), CHROMEDRIVER)


@pytest.mark.timeout(420)
def test_console_shows_calls_pushes_relays_and_doctor_live(
    stack: DevStack, browser: WebDriver, tmp_path: Path
) -> None:
    relay = f"ws://127.0.0.1:{stack.ports['relay']}"
    first = stack.call("answered")

    browser.get(stack.console)
    row = f'tr.call[data-linkedid="{first}"]'
    wait_for(browser, f'{row}[data-state="ended"]', "the answered call, ended")
    call = browser.find_element(By.CSS_SELECTOR, row).text
    for shown in ("김철수", "01026132471", "07045144801", "answered by 1010", "ended: answered"):
        assert shown in call, f"{shown!r} not in the call row: {call!r}"
    assert re.search(r"\b\d+ ms\b", call), f"no PBX-to-push latency in {call!r}"
    assert "3 device(s)" in call and "demo-kim" in call and "demo-lee" in call, call

    # the pushes as the phones show them: kim's two devices and lee's phone, then their cancels
    wait_count(browser, f'.card.cancel[data-linkedid="{first}"]', 3, "cancels")
    incoming = texts(browser, f'.card.incoming[data-linkedid="{first}"]')
    assert len(incoming) == 3, incoming
    for card in incoming:
        for shown in ("수신전화", "김철수", "01026132471", "데모상사", "070-4514-4801"):
            assert shown in card, f"{shown!r} not on the incoming card {card!r}"
    assert any("내선 1010" in c and "demo-kim" in c for c in incoming), incoming
    cancels = texts(browser, f'.card.cancel[data-linkedid="{first}"]')
    assert len(cancels) == 3 and all("answered_elsewhere" in c for c in cancels), cancels

    relays = browser.find_element(By.ID, "relays").text
    assert relay in relays and "connected" in relays, relays
    assert browser.find_element(By.ID, "live").text == "live"

    doctor = browser.find_element(By.ID, "doctor-status").text
    if importlib.util.find_spec("functions.admin.doctor") is None:
        assert doctor.startswith("doctor unavailable"), doctor
    else:
        problems = stack.state()["doctor"]["problems"]
        # the demo data has a suspended member and a web dummy token: warnings at least
        assert problems, "the doctor found nothing in the demo data"
        assert doctor.startswith(f"{len(problems)} finding(s)"), doctor
        shown = browser.find_element(By.ID, "doctor").text
        assert all(p["path"] in shown for p in problems), shown

    # a second call appears without a reload: the marker set in this page load survives
    browser.execute_script("window.noReloadMarker = 'still the same page';")
    second = stack.call("missed")
    wait_for(browser, f'tr.call[data-linkedid="{second}"][data-state="ended"]', "the 2nd call")
    assert browser.execute_script("return window.noReloadMarker") == "still the same page"
    call = browser.find_element(By.CSS_SELECTOR, f'tr.call[data-linkedid="{second}"]').text
    assert "ended: caller_abandoned" in call and "answered by" not in call, call
    wait_for(browser, f'.card.missed[data-linkedid="{second}"]', "the missed-call notices")
    missed = texts(browser, f'.card.missed[data-linkedid="{second}"]')
    assert missed and all("부재중 전화" in m and "김철수" in m for m in missed), missed
    cancels = texts(browser, f'.card.cancel[data-linkedid="{second}"]')
    assert cancels and all("caller_hung_up" in c for c in cancels), cancels
    # both calls are listed, newest first
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.call")
    listed = [e.get_attribute("data-linkedid") for e in rows]
    assert listed.index(second) < listed.index(first), listed

    assert browser.execute_script(
        "return document.fonts.check('16px \"Noto Sans CJK KR\"', '수신전화')"
    ), "the page has no Korean font: Hangul would render as boxes"
    png = browser.get_screenshot_as_png()
    (tmp_path / "console.png").write_bytes(png)
    assert_not_blank(png)
