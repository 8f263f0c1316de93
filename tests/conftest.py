"""Shared pytest setup: no gRPC fork handlers (the supervisor forks), the speech fixture, strict skips.

``UV_TEST_STRICT=1`` (set by scripts/test.sh when it runs as root, i.e. in CI, where it has
installed every tool the tests need) turns a skip into a failure: a missing promtool, Chromium
or network namespace must not leave the monitoring or WebRTC tests silently untested. A skip
whose reason starts with ``optional:`` (a condition CI is not meant to have) stays a skip.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Callable, Generator
from typing import Any

import pytest

from tests.helpers.speech import speech_bytes

STRICT = os.environ.get("UV_TEST_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not (STRICT and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if reason.removeprefix("Skipped: ").startswith("optional:"):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under UV_TEST_STRICT=1 (CI installs everything these tests need): {reason}; "
        "install what it names, or run without UV_TEST_STRICT to allow the skip"
    )


@pytest.fixture(scope="session")
def speech_wav() -> Callable[[str], bytes]:
    """``speech_wav(text)`` -> WAV bytes of Piper speaking ``text`` (cached on disk)."""
    return speech_bytes
