"""The STT service's engine options (``options:`` of the service in config/services.yaml), VAD included."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.config import ServiceConfig
from services.runtime.options import validate_options
from services.stt.turn_config import TurnOptions
from services.stt.vad_config import VadOptions


class SttOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, float16, int8_float16...")
    cpu_threads: int = Field(0, ge=0, description="Threads per transcription; 0 lets CTranslate2 pick.")
    beam_size: int = Field(1, ge=1, le=20, description="Default beam width; a request may set its own.")
    language: str = Field(
        "auto", description="Default language: an ISO-639-1 code ('en'), or 'auto' to detect (~0.8 s more)."
    )
    max_audio_s: float = Field(600.0, gt=0, description="Longest clip accepted; longer ones get a 400.")
    max_concurrency: int = Field(
        1, ge=1, le=16, description="Transcriptions run at once (CTranslate2 workers); the rest wait in line."
    )
    max_queue: int = Field(
        16, ge=0, description="Calls allowed to wait for a worker; beyond that they get RESOURCE_EXHAUSTED."
    )
    vad_filter: bool = Field(False, description="Drop silence with faster-whisper's Silero VAD first.")
    vad: VadOptions = Field(
        default_factory=VadOptions,  # type: ignore[arg-type]
        description="Streaming and DetectSpeech VAD defaults; a request may set its own.",
    )
    turn: TurnOptions = Field(
        default_factory=TurnOptions,  # type: ignore[arg-type]
        description="End of turn for streams: VAD silence or the semantic turn model, and speculation.",
    )
    max_streams: int = Field(
        16, ge=1, le=1024, description="StreamingRecognize streams open at once; more get RESOURCE_EXHAUSTED."
    )
    partial_interval_ms: int = Field(
        1000, ge=100, le=60_000, description="Default time between PARTIAL transcripts when a stream asks."
    )
    max_utterance_s: float = Field(
        30.0, ge=2, le=600,
        description="A longer utterance is cut and finalised (Whisper decodes 30 s windows).",
    )
    cluster_address: str = Field(
        "", description="engine ray-serve: Ray Serve's gRPC proxy (host:port) that runs the decodes."
    )
    cluster_application: str = Field("stt", description="engine ray-serve: the Serve application of the STT.")
    cluster_wait_s: float = Field(
        600.0, gt=0, description="engine ray-serve: how long loading waits for the application to answer."
    )

    @classmethod
    def from_config(cls, cfg: ServiceConfig) -> SttOptions:
        return validate_options(cls, cfg, _lower_language(cfg.options))


def _lower_language(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("language"), str):
        out["language"] = out["language"].strip().lower() or "auto"
    return out
