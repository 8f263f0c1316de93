"""Samples to bytes: pauses, silence trimming, resampling (soxr) and encoding (soundfile/libsndfile).

Formats: ``pcm`` (raw little-endian PCM16 mono, no header), ``wav`` and ``flac`` (PCM16), ``mp3``
(MPEG layer III) and ``opus`` (Ogg Opus). mp3 and opus are written by libsndfile 1.1+; where the
installed one cannot, :func:`check_format` says so with a 400. mp3 takes only the MPEG sample
rates and Opus only 8/12/16/24/48 kHz: an engine rate Opus cannot take (Piper's 22.05 kHz) is
resampled up to the next one it can, and a requested rate either cannot take is a 400.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidArgument

SENTENCE_PAUSE_S = 0.25
CLAUSE_PAUSE_S = 0.1
PAUSES = {"sentence": SENTENCE_PAUSE_S, "clause": CLAUSE_PAUSE_S, "none": 0.0}
MIN_RATE, MAX_RATE = 8_000, 96_000
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    container: str
    """libsndfile major format ('' for headerless pcm)."""
    subtype: str
    media_type: str
    rates: tuple[int, ...] = ()
    """The only rates it can take; empty: any rate in MIN_RATE..MAX_RATE."""


FORMATS: dict[str, Format] = {
    "pcm": Format("pcm", "", "PCM_16", "audio/pcm"),
    "wav": Format("wav", "WAV", "PCM_16", "audio/wav"),
    "flac": Format("flac", "FLAC", "PCM_16", "audio/flac"),
    "mp3": Format("mp3", "MP3", "MPEG_LAYER_III", "audio/mpeg", MP3_RATES),
    "opus": Format("opus", "OGG", "OPUS", "audio/ogg", OPUS_RATES),
}


@functools.cache
def unsupported_here() -> dict[str, str]:
    """Formats this machine's libsndfile cannot write, with the reason."""
    import soundfile  # noqa: PLC0415 - in the tts extra; pcm needs no soundfile

    out: dict[str, str] = {}
    majors = soundfile.available_formats()
    for fmt in FORMATS.values():
        if fmt.container and (
            fmt.container not in majors or fmt.subtype not in soundfile.available_subtypes(fmt.container)
        ):
            out[fmt.name] = (
                f"the installed libsndfile {soundfile.__libsndfile_version__} cannot write {fmt.container}/"
                f"{fmt.subtype} (mp3 and opus need libsndfile 1.1 or newer)"
            )
    return out


def writable_formats() -> tuple[str, ...]:
    return tuple(n for n in FORMATS if n not in unsupported_here())


def check_format(name: str) -> Format:
    """The Format for a request's ``format`` ('' means pcm), or a 400 that lists the usable ones."""
    key = name.strip().lower() or "pcm"
    fmt = FORMATS.get(key)
    usable = ", ".join(writable_formats())
    if fmt is None:
        raise InvalidArgument(f"format {name!r} is not supported; use one of: {usable}")
    reason = unsupported_here().get(key)
    if reason:
        raise InvalidArgument(f"format {key!r} is not available on this service: {reason}; use one of: {usable}")
    return fmt


def output_rate(fmt: Format, requested: int, engine_rate: int) -> int:
    """The rate to encode at: ``requested`` (0 = the engine's) checked against what ``fmt`` takes."""
    if requested == 0:
        if not fmt.rates or engine_rate in fmt.rates:
            return engine_rate
        return min((r for r in fmt.rates if r >= engine_rate), default=max(fmt.rates))
    if fmt.rates and requested not in fmt.rates:
        raise InvalidArgument(
            f"sample_rate {requested} is not possible in {fmt.name}; use one of "
            f"{', '.join(map(str, fmt.rates))} (or 0 for the engine's rate)"
        )
    if not MIN_RATE <= requested <= MAX_RATE:
        raise InvalidArgument(
            f"sample_rate {requested} is outside {MIN_RATE}..{MAX_RATE} Hz; use e.g. 16000, 24000 or 48000, "
            "or 0 for the engine's rate"
        )
    return requested


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def trim_silence(samples: np.ndarray, rate: int, threshold: float = 0.01, pad_s: float = 0.03) -> np.ndarray:
    """Drop leading and trailing near-silence, keeping ``pad_s`` around the sound."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return samples
    pad = round(pad_s * rate)
    return samples[max(0, int(loud[0]) - pad) : int(loud[-1]) + pad + 1]


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate_in == rate_out or samples.size == 0:
        return samples
    import soxr  # noqa: PLC0415 - in the tts extra

    return np.asarray(soxr.resample(samples, rate_in, rate_out, quality="HQ"), dtype=np.float32)


def to_pcm16(samples: np.ndarray) -> bytes:
    ints: np.ndarray = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return ints.tobytes()


def encode(samples: np.ndarray, rate: int, fmt: Format) -> bytes:
    """float32 mono samples at ``rate`` as ``fmt`` bytes (a whole file for containers)."""
    if not fmt.container:
        return to_pcm16(samples)
    import soundfile  # noqa: PLC0415

    buf = io.BytesIO()
    data = np.clip(np.ascontiguousarray(samples, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buf, data, rate, format=fmt.container, subtype=fmt.subtype)
    return bytes(buf.getbuffer())
