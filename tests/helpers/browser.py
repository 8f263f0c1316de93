"""Headless Chromium (Debian's /usr/bin/chromium) driven by Python Playwright, with a fake microphone.

``fake_mic_wav`` writes the WAV that Chromium plays as the microphone: Piper speech
(tests.helpers.speech) and silences, resampled to 48 kHz mono PCM16, the format Chromium's fake
capture reads most safely. Chromium loops the file, so end it with silence longer than the test.
The capture starts when the page calls getUserMedia; the demo page does that once the call is
up, so the file's first second reaches the server.

``demo_browser`` launches the browser (never ``playwright install``: it uses the system
Chromium) with a fresh profile and the microphone allowed, and yields a :class:`DemoPage`. Launch
it inside ``tests.helpers.netns.loopback_netns()`` for WebRTC: the browser inherits the namespace
of the thread that starts Playwright.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from playwright.sync_api import Page, ViewportSize, sync_playwright

from tests.helpers.speech import Pcm, pcm_to_wav, read_wav, resample, speech_bytes, to_pcm16

CHROMIUM = "/usr/bin/chromium"
MIC_RATE = 48000
BASE_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    """``$UV_TEST_LOG_DIR/screenshots`` (default var/test-logs/screenshots), kept as CI artifacts."""
    path = Path(os.environ.get("UV_TEST_LOG_DIR", ROOT / "var" / "test-logs")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fake_mic_wav(dest: Path, parts: list[str | float]) -> Path:
    """A 48 kHz mono WAV of ``parts``: a str is Piper speech of that text, a float seconds of silence."""
    pieces = []
    for part in parts:
        if isinstance(part, str):
            samples, rate = read_wav(speech_bytes(part))
            pieces.append(resample(samples.mean(axis=1, keepdims=True), rate, MIC_RATE))
        else:
            pieces.append(np.zeros((int(part * MIC_RATE), 1), np.float32))
    dest.write_bytes(pcm_to_wav(Pcm(to_pcm16(np.concatenate(pieces)), MIC_RATE, 1)))
    return dest


def chromium_flags(mic_wav: Path) -> list[str]:
    return [
        *BASE_FLAGS,
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav.resolve()}",
        "--allow-loopback-in-peer-connection",
        # plain host addresses instead of mDNS names: a loopback-only namespace has no multicast
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


class DemoPage:
    """The demo page in a browser tab: open it, press its buttons, read ``window.uvDemo.state``."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, base_url: str, **params: str) -> None:
        """Load the page with query parameters (transport, agent, aec/agc/ns...) and its pickers filled."""
        self.page.goto(f"{base_url}/?{urlencode(params)}")
        self.poll("the agent picker filled", "document.querySelector('#agent').options.length > 0", 30)

    def connect(self) -> None:
        self.page.click("#connect")

    def state(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.uvDemo.state"))

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 180) -> dict[str, Any]:
        """Poll the page's state until ``check`` holds; fail on a page error, an error status or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if check(state):
                return state
            if state["status"] == "error" or self.errors:
                raise AssertionError(f"page failed while waiting for {what}: {state['lastError']} {self.errors}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on the page within {timeout}s; state: {self.summary(state)}")
            self.page.wait_for_timeout(250)

    def at_mic_time(self, seconds: float) -> None:
        """Wait until the fake microphone's file has played ``seconds`` (it starts when the mic opens)."""
        self.poll(
            f"{seconds} s of microphone",
            f"window.uvDemo.state.micStartedMs !== null && "
            f"performance.now() - window.uvDemo.state.micStartedMs >= {seconds * 1000}",
            seconds + 60,
        )

    def poll(self, what: str, expression: str, timeout: float) -> None:
        """Wait until a JS expression is true. (Playwright's wait_for_function evaluates strings with
        eval, which the page's Content-Security-Policy forbids; page.evaluate is not affected.)"""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on the page within {timeout}s")
            self.page.wait_for_timeout(50)

    def summary(self, state: dict[str, Any] | None = None) -> str:
        state = state or self.state()
        brief = {k: v for k, v in state.items() if k not in ("latency",)}
        return json.dumps(brief, default=str)[:3000]

    def event_log(self) -> list[str]:
        return list(self.page.evaluate("window.uvDemo.log()"))

    def screenshots(self, name: str) -> list[Path]:
        """Full-page screenshots at desktop and phone width under :func:`artifacts_dir`."""
        out = []
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(size)
            self.page.wait_for_timeout(200)
            path = artifacts_dir() / f"{name}-{label}.png"
            self.page.screenshot(path=str(path), full_page=True)
            out.append(path)
        self.page.set_viewport_size(DESKTOP)
        return out

    def overflows_horizontally(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"))

    def dump(self, label: str) -> None:
        """Print what the page saw (for a failing test)."""
        print(f"\n===== {label}: page event log =====")
        with contextlib.suppress(Exception):
            print("\n".join(self.event_log()))
            print(f"state: {self.summary()}")
        print(f"console: {self.console[-40:]}\npage errors: {self.errors}")


@contextlib.contextmanager
def demo_browser(mic_wav: Path) -> Iterator[DemoPage]:
    """A fresh headless Chromium whose microphone plays ``mic_wav``; yields the page (not loaded yet)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=chromium_flags(mic_wav))
        try:
            context = browser.new_context(permissions=["microphone"], viewport=DESKTOP)
            yield DemoPage(context.new_page())
        finally:
            browser.close()
