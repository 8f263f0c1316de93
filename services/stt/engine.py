"""The STT engine protocol: what any speech-to-text engine adapter provides.

The service speaks only this protocol; faster-whisper is one adapter (``whisper_engine``), and
another engine plugs in by implementing these four methods and registering in ``ENGINES``.
Engines are synchronous and CPU/GPU-bound: the service calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.stt.options import SttOptions


class ModelLoadError(Exception):
    """The engine could not load the model; the message says why and what to configure instead."""


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    language: str | None
    """ISO-639-1 code, or None to detect."""
    beam_size: int
    initial_prompt: str | None
    vad_filter: bool = False


@dataclass(frozen=True, slots=True)
class SegmentResult:
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    segments: tuple[SegmentResult, ...]
    language: str
    language_probability: float


class SttEngine(Protocol):
    def load(self, model_ref: str) -> None:
        """Load the model from a folder or hub id; raise ModelLoadError with the reason on failure."""
        ...

    def languages(self) -> frozenset[str]:
        """Language codes the loaded model accepts."""
        ...

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcript:
        """Transcribe float32 mono 16 kHz samples."""
        ...

    def close(self) -> None: ...


EngineFactory = Callable[[SttOptions, str, str], SttEngine]
"""(options, device, download_root) -> an unloaded engine."""
