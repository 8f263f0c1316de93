"""Integration fixtures: the STT service's own venv, Piper speech, and service logs on failure.

``stt_python`` is ``$UV_STT_PYTHON`` when set, else ``.venvs/test-stt`` built once per session
with uv (``uv venv`` + ``uv pip install -e '.[stt]'``; a re-run is a quick no-op).
A test that registers a service log with ``service_logs`` gets its tail in the failure report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from tests.helpers.speech import speech_bytes

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LOGS = pytest.StashKey[list[Callable[[], str]]]()
LOG_TAIL_LINES = 120


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found beside this python or on PATH; run scripts/bootstrap.sh main,dev")
    return found


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def stt_python() -> str:
    """Interpreter of a venv with the project's ``stt`` extra."""
    given = os.environ.get("UV_STT_PYTHON")
    if given:
        return given
    venv = ROOT / ".venvs" / "test-stt"
    python = venv / "bin" / "python"
    if not python.exists():
        _run([_uv(), "venv", "--python", sys.executable, str(venv)])
    _run([_uv(), "pip", "install", "--python", str(python), "-e", f"{ROOT}[stt]"])
    return str(python)


@pytest.fixture(scope="session")
def speech_wav() -> Callable[[str], bytes]:
    """``speech_wav(text)`` -> WAV bytes of Piper speaking ``text`` (cached on disk)."""
    return speech_bytes


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
