"""The TTS engine protocol: what any text-to-speech engine adapter provides.

The service speaks only this protocol; Kokoro (``kokoro_engine``) and Piper (``piper_engine``)
are adapters. An engine synthesises one piece of text at a time, synchronously, into float32
mono samples at its own rate; the service splits the text, runs engines on worker threads,
resamples and encodes. Engines refuse what they cannot do (a language, a speed) with
``InvalidArgument`` before any work, through :meth:`TtsEngine.check`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from services.tts.options import TtsOptions


class ModelLoadError(Exception):
    """The engine could not load its model; the message says why and what to configure instead."""


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    id: str
    engine: str
    languages: tuple[str, ...]
    """Languages the voice can speak, its own first."""
    gender: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class SpeedRange:
    low: float
    high: float

    def __contains__(self, speed: object) -> bool:
        return isinstance(speed, float | int) and self.low <= speed <= self.high


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What ListVoices, Info and request validation need to know about a loaded engine."""

    name: str
    sample_rate: int
    voices: tuple[VoiceInfo, ...]
    default_voice: str
    speeds: SpeedRange
    model: str
    details: dict[str, str] = field(default_factory=dict)

    def voice(self, voice_id: str) -> VoiceInfo | None:
        return next((v for v in self.voices if v.id == voice_id), None)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lang for v in self.voices for lang in v.languages))


class TtsEngine(Protocol):
    def load(self) -> EngineInfo:
        """Load the model and voices; raise ModelLoadError with the reason on failure."""
        ...

    def synthesize(self, text: str, voice: str, language: str, speed: float) -> np.ndarray:
        """float32 mono samples in [-1, 1] at ``EngineInfo.sample_rate`` for one piece of text.

        Called from worker threads, possibly several at once; the adapter serialises what must be.
        Leading and trailing silence is trimmed; the service adds pauses between pieces."""
        ...

    def close(self) -> None: ...


EngineFactory = Callable[["TtsOptions", str, str, str], TtsEngine]
"""(options, Kokoro model reference, models cache folder, service name) -> an unloaded engine."""

LANGUAGE_ALIASES = {
    "en": "en-us", "english": "en-us", "pt": "pt-br", "portuguese": "pt-br", "fr": "fr-fr", "french": "fr-fr",
    "es": "es", "spanish": "es", "it": "it", "italian": "it", "hi": "hi", "hindi": "hi",
}


def canonical_language(language: str) -> str:
    """``EN_us`` -> ``en-us``; ``pt`` -> ``pt-br``; other codes come back lower-cased with dashes."""
    lang = language.strip().lower().replace("_", "-")
    return LANGUAGE_ALIASES.get(lang, lang)
