"""Turn request audio into what Whisper wants: float32 mono at 16 kHz, with clear refusals.

Accepted: WAV (any rate and channel count, PCM or float), raw little-endian PCM16 with a declared
rate and channel count, and, when the encoding is unspecified, any container FFmpeg (PyAV) can
read. Everything is checked before the expensive work: empty input, garbage, a broken PCM byte
count, a missing or absurd rate, and clips longer than ``max_audio_s`` all raise
``InvalidArgument`` with a reason that says what to send instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.errors import InvalidArgument
from services.stt import wavfile
from services.stt.containers import decode_container

TARGET_RATE = 16_000
MIN_RATE, MAX_RATE = 4_000, 384_000
MAX_CHANNELS = 32
Encoding = Literal["auto", "wav", "pcm_s16le"]


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: np.ndarray
    """float32 mono at TARGET_RATE."""
    source_rate: int
    source_channels: int
    source_format: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / TARGET_RATE


def check_rate(rate: int, what: str) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidArgument(
            f"{what} sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; "
            "declare the real rate of the samples (e.g. 16000, 22050, 44100, 48000)"
        )


def check_duration(seconds: float, max_audio_s: float) -> None:
    if seconds > max_audio_s:
        raise InvalidArgument(
            f"audio is {seconds:.1f} s long, over this service's limit of {max_audio_s:g} s "
            "(options.max_audio_s); split it into shorter clips"
        )


def _empty(detail: str) -> InvalidArgument:
    return InvalidArgument(
        f"audio is empty ({detail}); send speech as a WAV file, or as raw PCM16 with encoding "
        "PCM_S16LE and its sample_rate"
    )


def decode_pcm16(data: bytes, sample_rate: int, channels: int, max_audio_s: float) -> DecodedAudio:
    if sample_rate <= 0:
        raise InvalidArgument(
            "PCM_S16LE audio needs its sample_rate (e.g. 16000 or 22050): raw samples carry no header; "
            "set Audio.sample_rate, or send a WAV file instead"
        )
    check_rate(sample_rate, "PCM_S16LE")
    channels = channels or 1
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidArgument(f"channels must be 1..{MAX_CHANNELS} for PCM_S16LE audio, got {channels}")
    frame = 2 * channels
    if len(data) % frame:
        raise InvalidArgument(
            f"PCM_S16LE audio has {len(data)} bytes, not a whole number of {frame}-byte frames "
            f"(16-bit samples x {channels} channel(s)); send complete little-endian 16-bit samples"
        )
    check_duration(len(data) / frame / sample_rate, max_audio_s)
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32).reshape(-1, channels) / 32768.0
    return _finish(samples, sample_rate, channels, "pcm_s16le")


def decode_wav(data: bytes, max_audio_s: float) -> DecodedAudio:
    layout = wavfile.read_layout(data)
    check_rate(layout.sample_rate, "WAV")
    if layout.channels > MAX_CHANNELS:
        raise InvalidArgument(f"WAV has {layout.channels} channels; at most {MAX_CHANNELS} are supported")
    if layout.frames == 0:
        raise _empty("the WAV file holds no samples")
    check_duration(layout.duration_s, max_audio_s)
    samples = wavfile.read_samples(data, layout)
    fmt = f"wav/{'float' if layout.is_float else 'pcm'}{layout.bits}"
    return _finish(samples, layout.sample_rate, layout.channels, fmt)


def decode_audio(
    data: bytes, encoding: Encoding, *, sample_rate: int = 0, channels: int = 0, max_audio_s: float
) -> DecodedAudio:
    """Decode, validate and resample one clip (see the module docstring)."""
    if not data:
        raise _empty("0 bytes")
    if encoding == "pcm_s16le":
        return decode_pcm16(data, sample_rate, channels, max_audio_s)
    if encoding == "wav" or wavfile.is_wav(data):
        return decode_wav(data, max_audio_s)
    samples, rate, chans, fmt = decode_container(data, TARGET_RATE, int(max_audio_s * TARGET_RATE))
    if samples.size == 0:
        raise _empty(f"the {fmt} file decoded to no samples")
    check_duration(samples.size / TARGET_RATE, max_audio_s)
    return DecodedAudio(samples, rate, chans, fmt)


def _finish(samples: np.ndarray, rate: int, channels: int, fmt: str) -> DecodedAudio:
    mono = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples.reshape(-1)
    return DecodedAudio(resample(mono, rate), rate, channels, fmt)


def resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at ``rate`` to TARGET_RATE with soxr (high quality, linear phase)."""
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate == TARGET_RATE:
        return mono
    import soxr  # noqa: PLC0415 - in the stt extra; WAV/PCM at 16 kHz (and their tests) need no soxr

    return np.asarray(soxr.resample(mono, rate, TARGET_RATE, quality="HQ"), dtype=np.float32)
