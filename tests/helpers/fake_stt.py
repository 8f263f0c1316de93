"""A fake STT engine and an SttService built around it, for tests that need no model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from services.stt.engine import DecodeOptions, SegmentResult, Transcript
from services.stt.service import SttService


class FakeEngine:
    def __init__(self) -> None:
        self.seen: list[DecodeOptions] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def load(self, model_ref: str) -> None:
        return None

    def languages(self) -> frozenset[str]:
        return frozenset({"en", "pt"})

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcript:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.seen.append(options)
        seg = SegmentResult(0.0, len(samples) / 16000, "hello there", -0.1, 0.01)
        return Transcript("hello there", (seg,), options.language or "en", 0.99)

    def close(self) -> None:
        return None


def make_service(tmp_path: Path, **options: Any) -> tuple[SttService, FakeEngine]:
    settings = load_settings(env={})
    cfg = settings.services["stt"]
    cfg = cfg.model_copy(update={"options": {**cfg.options, **options}})
    g = GlobalContext.create(settings, Paths(root=tmp_path, var=tmp_path, cache=tmp_path, venvs=tmp_path))
    svc = SttService(
        ServiceContext(process=ProcessContext(global_=g, name="stt"), config=cfg, grpc_port=0, http_port=0)
    )
    engine = FakeEngine()
    svc.engine = engine
    return svc, engine
