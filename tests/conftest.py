"""Shared pytest setup: no gRPC fork handlers (the supervisor forks), and the speech fixture."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Callable

import pytest

from tests.helpers.speech import speech_bytes


@pytest.fixture(scope="session")
def speech_wav() -> Callable[[str], bytes]:
    """``speech_wav(text)`` -> WAV bytes of Piper speaking ``text`` (cached on disk)."""
    return speech_bytes
