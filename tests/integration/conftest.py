"""Integration fixtures: the STT service's own venv, Piper speech, and service logs on failure.

``stt_python`` is ``$UV_STT_PYTHON`` when set, else the STT venv the supervisor builds for the
default profile (built here if ``main.py --prepare-only`` has not run yet).
A test that registers a service log with ``service_logs`` gets its tail in the failure report.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from core.config import load_settings
from core.context import Paths
from core.managers.supervisor import VenvBuilder

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LOGS = pytest.StashKey[list[Callable[[], str]]]()
LOG_TAIL_LINES = 120


@pytest.fixture(scope="session")
def stt_python() -> str:
    """Interpreter of the STT service's own venv: the one main builds (``main.py --prepare-only``)."""
    given = os.environ.get("UV_STT_PYTHON")
    if given:
        return given
    settings = load_settings(env={})
    venv = asyncio.run(VenvBuilder(Paths.from_env()).ensure(settings.services["stt"]))
    return str(venv / "bin" / "python")


@pytest.fixture
def service_logs(request: pytest.FixtureRequest) -> Callable[[Callable[[], str]], None]:
    """Register a callable returning a service log; a failing test shows its tail."""

    def register(read: Callable[[], str]) -> None:
        request.node.stash.setdefault(SERVICE_LOGS, []).append(read)

    return register


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for i, read in enumerate(item.stash.get(SERVICE_LOGS, [])):
            tail = "\n".join(read().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"service log {i} (last {LOG_TAIL_LINES} lines)", tail))
    return report
