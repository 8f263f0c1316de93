"""Validate a SynthesizeRequest into a Plan: engine, voice, language, speed, format, rate, pieces.

Everything a request can get wrong is refused here, before any engine work, with a 400 that
says what to send instead: empty or over-long text, an unknown engine, voice or format, a
language the voice cannot speak, a speed or sample rate out of range. With no engine named, the
engine that owns the requested voice serves it, else the service's default engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import InvalidArgument
from services.tts.audio import Format, check_format, output_rate
from services.tts.engine import EngineInfo, VoiceInfo, canonical_language
from services.tts.options import TtsOptions
from services.tts.text_split import Piece, split_text

MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True, slots=True)
class Plan:
    engine: str
    voice: str
    language: str
    speed: float
    format: Format
    sample_rate: int
    engine_rate: int
    pieces: tuple[Piece, ...]
    chars: int


def plan_request(
    text: str, *, voice: str, language: str, speed: float, audio_format: str, sample_rate: int, engine: str,
    engines: Mapping[str, EngineInfo], default_engine: str, options: TtsOptions,
) -> Plan:
    check_text(text, options.max_text_chars)
    fmt = check_format(audio_format)
    speed = check_speed(speed)
    info = pick_engine(engine, voice, engines, default_engine)
    chosen = pick_voice(voice, info, engines)
    lang = pick_language(language, chosen, info, engines)
    if speed not in info.speeds:
        others = [e.name for e in engines.values() if speed in e.speeds and e.name != info.name]
        hint = f"; engine {others[0]!r} takes {speed:g}" if others else ""
        raise InvalidArgument(
            f"engine {info.name!r} takes speed {info.speeds.low:g}..{info.speeds.high:g}, got {speed:g}{hint}"
        )
    if sample_rate < 0:
        raise InvalidArgument(f"sample_rate must be 0 (the engine's rate) or a rate in Hz, got {sample_rate}")
    rate = output_rate(fmt, sample_rate, info.sample_rate)
    pieces = split_text(
        text, first_clause_min_words=options.first_clause_min_words, max_chars=options.max_piece_chars
    )
    if not pieces:
        raise InvalidArgument(f"text {text[:60]!r} has nothing to pronounce (no letters or digits)")
    return Plan(info.name, chosen.id, lang, speed, fmt, rate, info.sample_rate, tuple(pieces), len(text))


def check_text(text: str, max_chars: int) -> None:
    if not text.strip():
        raise InvalidArgument("text is empty; put the words to speak in 'text' (OpenAI route: 'input')")
    if len(text) > max_chars:
        raise InvalidArgument(
            f"text is {len(text)} characters, over this service's limit of {max_chars} (options.max_text_chars); "
            "send it in shorter requests, e.g. a paragraph at a time"
        )


def check_speed(speed: float) -> float:
    speed = float(speed) or 1.0
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidArgument(f"speed must be {MIN_SPEED:g}..{MAX_SPEED:g} (1.0 is normal, 0 means 1.0), got {speed}")
    return speed


def pick_engine(engine: str, voice: str, engines: Mapping[str, EngineInfo], default_engine: str) -> EngineInfo:
    name = engine.strip().lower()
    if name:
        if name not in engines:
            raise InvalidArgument(f"engine {engine!r} is not loaded here; available engines: {', '.join(engines)}")
        return engines[name]
    owner = next((e for e in engines.values() if voice and e.voice(voice)), None)
    return owner or engines[default_engine]


def pick_voice(voice: str, info: EngineInfo, engines: Mapping[str, EngineInfo]) -> VoiceInfo:
    found = info.voice(voice or info.default_voice)
    if found is not None:
        return found
    owner = next((e.name for e in engines.values() if e.voice(voice)), None)
    if owner:
        raise InvalidArgument(f"voice {voice!r} belongs to engine {owner!r}, not {info.name!r}; "
                              f"{info.name}'s voices: {', '.join(v.id for v in info.voices)}")
    listing = "; ".join(f"{e.name}: {', '.join(v.id for v in e.voices)}" for e in engines.values())
    raise InvalidArgument(f"unknown voice {voice!r}; available voices: {listing} (GET /v1/audio/voices or ListVoices)")


def pick_language(language: str, voice: VoiceInfo, info: EngineInfo, engines: Mapping[str, EngineInfo]) -> str:
    lang = canonical_language(language) if language.strip() else voice.languages[0]
    if lang in voice.languages:
        return lang
    others = [e.name for e in engines.values() if e.name != info.name and lang in e.languages]
    hint = f"; for {lang} use engine {others[0]!r}" if others else ""
    raise InvalidArgument(
        f"{info.name} voice {voice.id!r} does not speak {language!r}; it speaks {', '.join(voice.languages)}{hint}"
    )
