"""VAD settings: the service defaults (``options.vad``) and the per-request overrides, validated.

A request's ``VadConfig`` (streaming or DetectSpeech) and the ``/detect`` form fields use zero
for "the service default"; anything else must lie in the ranges below, or the call is refused
with InvalidArgument naming the field, the range and what was sent. The same ranges bound the
config file's values, so a default can never be something a request could not ask for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidArgument

SAMPLE_RATE = 16_000
THRESHOLD_RANGE = (0.01, 0.99)
MIN_SPEECH_RANGE = (1, 10_000)
END_SILENCE_RANGE = (50, 10_000)
PRE_ROLL_RANGE = (1, 5_000)
NEG_THRESHOLD_GAP = 0.15
"""Hysteresis: once in speech, a frame counts as silence only below threshold - 0.15 (as Silero's own)."""


class VadOptions(BaseModel):
    """``options.vad`` of the STT service in config/services.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(
        0.5, ge=THRESHOLD_RANGE[0], le=THRESHOLD_RANGE[1],
        description="Silero speech probability above which a 32 ms frame counts as speech.",
    )
    min_speech_ms: int = Field(
        250, ge=MIN_SPEECH_RANGE[0], le=MIN_SPEECH_RANGE[1],
        description="Speech must last this long before SPEECH_STARTED (coughs and clicks are ignored).",
    )
    end_silence_ms: int = Field(
        600, ge=END_SILENCE_RANGE[0], le=END_SILENCE_RANGE[1],
        description="Silence that ends an utterance: the end-of-turn silence.",
    )
    pre_roll_ms: int = Field(
        300, ge=PRE_ROLL_RANGE[0], le=PRE_ROLL_RANGE[1],
        description="Audio before the detected start that goes to the transcriber (first syllable).",
    )
    model_path: str = Field(
        "", description="A Silero VAD v6 ONNX file; empty means the one shipped inside faster-whisper."
    )
    threads: int = Field(1, ge=1, le=8, description="onnxruntime intra-op threads for the VAD (1 is plenty).")


@dataclass(frozen=True, slots=True)
class VadSettings:
    """The effective settings of one stream or one DetectSpeech call."""

    threshold: float
    min_speech_ms: int
    end_silence_ms: int
    pre_roll_ms: int

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - NEG_THRESHOLD_GAP, 0.01)

    @staticmethod
    def samples(ms: int) -> int:
        return ms * SAMPLE_RATE // 1000


def resolve_vad(
    defaults: VadOptions,
    *,
    threshold: float = 0.0,
    min_speech_ms: int = 0,
    end_silence_ms: int = 0,
    pre_roll_ms: int = 0,
    where: str = "vad",
) -> VadSettings:
    """Request values over the defaults; zero means default. ``where`` prefixes field names in errors."""
    return VadSettings(
        threshold=_float(f"{where}.threshold", threshold, THRESHOLD_RANGE, defaults.threshold),
        min_speech_ms=_int(f"{where}.min_speech_ms", min_speech_ms, MIN_SPEECH_RANGE, defaults.min_speech_ms),
        end_silence_ms=_int(
            f"{where}.end_silence_ms", end_silence_ms, END_SILENCE_RANGE, defaults.end_silence_ms
        ),
        pre_roll_ms=_int(f"{where}.pre_roll_ms", pre_roll_ms, PRE_ROLL_RANGE, defaults.pre_roll_ms),
    )


def _float(name: str, value: float, bounds: tuple[float, float], default: float) -> float:
    if value == 0:
        return default
    lo, hi = bounds
    if math.isnan(value) or not lo <= value <= hi:
        raise InvalidArgument(
            f"{name} must be a speech probability between {lo:g} and {hi:g} (0 for the service default "
            f"{default:g}), got {value:g}"
        )
    return float(value)


def _int(name: str, value: int, bounds: tuple[int, int], default: int) -> int:
    if value == 0:
        return default
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InvalidArgument(
            f"{name} must be {lo}..{hi} milliseconds (0 for the service default {default}), got {value}"
        )
    return int(value)
