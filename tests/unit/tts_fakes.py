"""A fake TTS engine and a TtsService built around fakes, for tests that need no model.

The fake speaks a 440 Hz tone, ``SECONDS_PER_WORD`` per word, at its engine's rate; it records
every call, can wait on a gate, and can sleep per piece so cancellation has something to stop.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from services.runtime import CallInfo
from services.tts.engine import EngineInfo, SpeedRange, VoiceInfo
from services.tts.service import TtsService

SECONDS_PER_WORD = 0.1
KOKORO_LANGS = ("en-us", "en-gb", "pt-br", "es", "fr-fr", "it", "hi")


def call(method: str = "Synthesize") -> CallInfo:
    return CallInfo(method=method, protocol="grpc", request_id="r1")


class FakeEngine:
    def __init__(self, name: str, rate: int, voices: tuple[VoiceInfo, ...], speeds: SpeedRange) -> None:
        self.name, self.rate, self.voices, self.speeds = name, rate, voices, speeds
        self.calls: list[tuple[str, str, str, float]] = []
        self.delay_s = 0.0
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.fail_on: str | None = None

    def load(self) -> EngineInfo:
        return EngineInfo(
            name=self.name, sample_rate=self.rate, voices=self.voices, default_voice=self.voices[0].id,
            speeds=self.speeds, model=f"fake-{self.name}",
        )

    def synthesize(self, text: str, voice: str, language: str, speed: float) -> np.ndarray:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on and self.fail_on in text:
            raise RuntimeError(f"engine exploded on {text!r}")
        self.calls.append((text, voice, language, speed))
        seconds = SECONDS_PER_WORD * len(text.split()) / speed
        t = np.arange(round(seconds * self.rate)) / self.rate
        return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def close(self) -> None:
        return None


def fake_kokoro() -> FakeEngine:
    def voice(vid: str, own: str) -> VoiceInfo:
        langs = (own, *(lang for lang in KOKORO_LANGS if lang != own))
        return VoiceInfo(vid, "kokoro", langs, "female")

    voices = (voice("jf_alpha", "en-us"), voice("af_heart", "en-us"), voice("pf_dora", "pt-br"))
    return FakeEngine("kokoro", 24000, voices, SpeedRange(0.5, 2.0))


def fake_piper() -> FakeEngine:
    return FakeEngine("piper", 22050, (VoiceInfo("en_US-joe-medium", "piper", ("en-us",)),), SpeedRange(0.25, 4.0))


def make_service(
    tmp_path: Path, *, engine: str = "kokoro", load: bool = True, **options: Any
) -> tuple[TtsService, dict[str, FakeEngine]]:
    settings = load_settings(env={})
    cfg = settings.services["tts"]
    cfg = cfg.model_copy(update={"engine": engine, "options": {**cfg.options, **options}})
    g = GlobalContext.create(settings, Paths(root=tmp_path, var=tmp_path, cache=tmp_path, venvs=tmp_path))
    svc = TtsService(ServiceContext(ProcessContext(global_=g, name="tts"), cfg, grpc_port=0, http_port=0))
    makers = {"kokoro": fake_kokoro, "piper": fake_piper}
    fakes = {name: makers[name]() for name in svc.engines}
    svc.engines = dict(fakes)
    if load:
        svc.load()
    return svc, fakes
