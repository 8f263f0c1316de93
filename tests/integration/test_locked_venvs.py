"""Every real service venv holds exactly what uv.lock pins for its extra, and nothing newer.

The venvs are the ones main builds (``main.py --prepare-only``); a pin for another platform
(a darwin-only wheel) is not expected here. llama-cpp-python comes from the keyed wheelhouse,
built from the locked sdist, so it too must carry the locked version.
"""

from __future__ import annotations

import pytest

from core.config import load_settings
from core.context import Paths
from core.managers.supervisor import VenvBuilder
from tests.helpers.locked import differences, installed
from tests.helpers.service_process import service_python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


@pytest.mark.parametrize("service", ["stt", "tts", "llm"])
def test_service_venv_matches_the_lock(service: str) -> None:
    cfg = load_settings(env={}).services[service]
    pins = VenvBuilder(Paths.from_env()).locked(cfg)
    have = installed(service_python(service))
    assert not differences(pins, have), f"{service} venv differs from uv.lock: {differences(pins, have)}"
    assert have.get("ultravox-pipeline") == "0.1.0"  # the project itself, editable, without deps
    extra = sorted(set(have) - {p.name for p in pins} - {"ultravox-pipeline"})
    assert not extra, f"{service} venv holds packages the lock does not pin for [{cfg.extra}]: {extra}"
