"""The first message of a StreamingRecognize stream: read it, check it, and settle the stream's settings.

Everything is checked before any audio is accepted, so a wrong sample rate or language fails
the call at once with INVALID_ARGUMENT instead of at the first utterance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from core.errors import InvalidArgument
from services.stt.engine import DecodeOptions
from services.stt.options import SttOptions
from services.stt.turn_config import TurnSettings, resolve_turn
from services.stt.vad_config import SAMPLE_RATE, VadSettings, resolve_vad

PARTIAL_INTERVAL_RANGE = (100, 60_000)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    vad: VadSettings
    decode: DecodeOptions
    partials: bool
    partial_interval_s: float
    max_utterance_s: float
    turn: TurnSettings


async def read_config(requests: AsyncIterator[Any]) -> Any:
    """The StreamingConfig of the first message; InvalidArgument if there is none."""
    first = await anext(requests, None)
    if first is None:
        raise InvalidArgument(
            "the stream ended before its first message; send a StreamingConfig (sample_rate 16000) first, "
            "then PCM16 audio frames"
        )
    kind = first.WhichOneof("request")
    if kind != "config":
        got = "an audio frame" if kind == "audio" else "an empty message"
        raise InvalidArgument(
            f"the first message of a stream must be 'config' (a StreamingConfig with sample_rate 16000), "
            f"got {got}; audio frames follow the config"
        )
    return first.config


def stream_settings(
    config: Any,
    options: SttOptions,
    decode_options: Callable[[str, int, str], DecodeOptions],
    languages: frozenset[str],
    *,
    have_turn_model: bool = False,
) -> StreamSettings:
    """Validate a StreamingConfig against the service options; zero fields take the defaults."""
    if config.sample_rate != SAMPLE_RATE:
        raise InvalidArgument(
            f"StreamingConfig.sample_rate must be {SAMPLE_RATE} (PCM16 mono at 16 kHz), got "
            f"{config.sample_rate}; resample to 16 kHz before streaming, or send whole clips at any rate "
            "to Transcribe"
        )
    decode = replace(decode_options(config.language, config.beam_size, ""), vad_filter=False)  # VAD done
    if decode.language is not None and languages and decode.language not in languages:
        sample = ", ".join(sorted(languages)[:12])
        raise InvalidArgument(
            f"language {decode.language!r} is not supported by this model; use an ISO-639-1 code "
            f"({sample}, ...) or 'auto' to detect it"
        )
    interval = config.partial_interval_ms or options.partial_interval_ms
    lo, hi = PARTIAL_INTERVAL_RANGE
    if not lo <= interval <= hi:
        raise InvalidArgument(
            f"partial_interval_ms must be {lo}..{hi} (0 for the service default "
            f"{options.partial_interval_ms}), got {interval}"
        )
    v = config.vad
    vad = resolve_vad(
        options.vad, threshold=v.threshold, min_speech_ms=v.min_speech_ms, end_silence_ms=v.end_silence_ms,
        pre_roll_ms=v.pre_roll_ms, where="config.vad",
    )
    turn = resolve_turn(
        options.turn, config.turn if config.HasField("turn") else None, have_model=have_turn_model
    )
    return StreamSettings(
        vad=vad, decode=decode, partials=config.partials, partial_interval_s=interval / 1000,
        max_utterance_s=options.max_utterance_s, turn=turn,
    )
