"""Integration fixtures: the services' own venvs, Piper speech, and service logs on failure.

``stt_python`` (``llm_python``, ``tts_python``) is ``$UV_STT_PYTHON`` when set, else the STT venv
the supervisor builds for the default profile (built here if ``main.py --prepare-only`` has not
run yet). A failing test gets the log tail of every ``ServiceProcess`` among its fixtures, and of
each service log it registered with ``service_logs``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from tests.helpers.service_process import ServiceProcess, service_python

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LOGS = pytest.StashKey[list[Callable[[], str]]]()
LOG_TAIL_LINES = 120


@pytest.fixture(scope="session")
def stt_python() -> str:
    return service_python("stt")


@pytest.fixture(scope="session")
def llm_python() -> str:
    return service_python("llm")


@pytest.fixture(scope="session")
def tts_python() -> str:
    return service_python("tts")


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
        procs = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, ServiceProcess)]
        reads = [*item.stash.get(SERVICE_LOGS, []), *(p.log_text for p in procs)]
        for i, read in enumerate(dict.fromkeys(reads)):
            tail = "\n".join(read().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"service log {i} (last {LOG_TAIL_LINES} lines)", tail))
    return report
