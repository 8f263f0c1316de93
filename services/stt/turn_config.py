"""End-of-turn settings: the service defaults (``options.turn``) and a stream's ``TurnConfig``, validated.

Two ways to end an utterance:

- ``vad``: after ``vad.end_silence_ms`` of silence, as before;
- ``semantic``: at a short pause (``pause_ms``) the end-of-turn model (Smart Turn) reads the
  utterance and gives P(complete); at or above ``threshold`` the utterance ends there, below it
  the stream waits, up to ``max_wait_ms`` of silence.

In both, the final decode starts speculatively at the pause (unless ``speculation`` is off or the
stream asks ``no_speculation``): when the user stays silent that decode is the FINAL, when speech
resumes it is thrown away. As in ``vad_config``, zero request fields mean the service default and
anything else outside the ranges below is refused with InvalidArgument naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidArgument
from services.stt.vad_config import SAMPLE_RATE

Detection = Literal["vad", "semantic"]
PAUSE_RANGE = (60, 2_000)
MAX_WAIT_RANGE = (200, 10_000)
THRESHOLD_RANGE = (0.01, 0.99)
DETECTIONS: dict[int, Detection | None] = {0: None, 1: "vad", 2: "semantic"}
"""TurnDetection enum values: UNSPECIFIED (the default), VAD, SEMANTIC."""


class TurnOptions(BaseModel):
    """``options.turn`` of the STT service in config/services.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detection: Detection = Field(
        "vad", description="Default for streams that do not choose: 'vad' (fixed silence) or 'semantic'.",
    )
    pause_ms: int = Field(
        200, ge=PAUSE_RANGE[0], le=PAUSE_RANGE[1],
        description="Silence after which the turn model is asked and the speculative final decode starts.",
    )
    max_wait_ms: int = Field(
        1600, ge=MAX_WAIT_RANGE[0], le=MAX_WAIT_RANGE[1],
        description="Semantic: the longest silence before an utterance ends whatever the model says.",
    )
    threshold: float = Field(
        0.5, ge=THRESHOLD_RANGE[0], le=THRESHOLD_RANGE[1],
        description="Semantic: P(complete) at or above which the turn ends at the pause.",
    )
    speculation: bool = Field(True, description="Start the final decode at the pause (streams may opt out).")
    model_path: str = Field(
        "", description="A Smart Turn v3 ONNX file; empty means the one in the pipecat-ai wheel (the stt extra).",
    )
    threads: int = Field(1, ge=1, le=8, description="onnxruntime intra-op threads for the turn model.")


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The effective end-of-turn settings of one stream."""

    detection: Detection
    pause_ms: int
    max_wait_ms: int
    threshold: float
    speculation: bool

    @property
    def pause_samples(self) -> int:
        return self.pause_ms * SAMPLE_RATE // 1000


def resolve_turn(
    defaults: TurnOptions, config: object | None, *, have_model: bool, where: str = "config.turn"
) -> TurnSettings:
    """A stream's ``TurnConfig`` over the service defaults.

    ``semantic`` without a turn model (not installed, or failed to load) quietly becomes ``vad``:
    the stream still works, and SPEECH_ENDED.turn_detection tells the caller what decided.
    """
    detection_value = int(getattr(config, "detection", 0) or 0)
    if detection_value not in DETECTIONS:
        raise InvalidArgument(
            f"{where}.detection must be TURN_DETECTION_VAD (1), TURN_DETECTION_SEMANTIC (2) or 0 for the "
            f"service default ({defaults.detection}), got {detection_value}"
        )
    detection = DETECTIONS[detection_value] or defaults.detection
    pause = _ranged(f"{where}.pause_ms", int(getattr(config, "pause_ms", 0) or 0), PAUSE_RANGE, defaults.pause_ms)
    max_wait = _ranged(
        f"{where}.max_wait_ms", int(getattr(config, "max_wait_ms", 0) or 0), MAX_WAIT_RANGE, defaults.max_wait_ms
    )
    threshold = _ranged(
        f"{where}.threshold", float(getattr(config, "threshold", 0.0) or 0.0), THRESHOLD_RANGE, defaults.threshold
    )
    if detection == "semantic" and max_wait <= pause:
        raise InvalidArgument(
            f"{where}.max_wait_ms ({max_wait}) must be longer than {where}.pause_ms ({pause}): the model is "
            "asked at the pause and the wait is capped after it"
        )
    return TurnSettings(
        detection="semantic" if detection == "semantic" and have_model else "vad",
        pause_ms=int(pause), max_wait_ms=int(max_wait), threshold=float(threshold),
        speculation=defaults.speculation and not bool(getattr(config, "no_speculation", False)),
    )


def _ranged(name: str, value: float, bounds: tuple[float, float], default: float) -> float:
    if value == 0:
        return default
    lo, hi = bounds
    if math.isnan(value) or not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be {lo:g}..{hi:g} (0 for the service default {default:g}), got {value:g}")
    return value
