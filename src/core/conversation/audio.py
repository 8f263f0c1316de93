"""Small PCM16 helpers for the conversation: WAV reading, resampling to 16 kHz, loudness.

Main never decodes compressed audio (the STT service does); these only serve recordings
(the user's side is kept as 16 kHz PCM16 mono) and the voice stream's idle check.
"""

from __future__ import annotations

import io
import math
import wave

import numpy as np

STT_RATE = 16000
CONTAINER_MAGIC = {b"RIFF": "a WAV (RIFF) file", b"OggS": "an Ogg file", b"fLaC": "a FLAC file", b"ID3": "an MP3 file",
                   b"\x1aE\xdf\xa3": "a WebM/Matroska file"}


def container_kind(data: bytes) -> str:
    """What file ``data`` starts like ("a WAV (RIFF) file"...), or "" for anything else."""
    return next((what for magic, what in CONTAINER_MAGIC.items() if data.startswith(magic)), "")


def resample_pcm16(pcm: bytes, rate: int, target: int = STT_RATE, channels: int = 1) -> bytes:
    """PCM16 at ``rate`` (interleaved ``channels``) as mono PCM16 at ``target``; linear interpolation."""
    samples = np.frombuffer(pcm[: len(pcm) // (2 * channels) * 2 * channels], dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != target and samples.size:
        n_out = max(1, round(samples.size * target / rate))
        samples = np.interp(np.linspace(0, samples.size - 1, n_out), np.arange(samples.size), samples)
    out: bytes = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return out


def wav_to_pcm16k(data: bytes) -> bytes:
    """A PCM16 WAV as 16 kHz mono PCM16; empty for anything else (another container, a bad file)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getsampwidth() != 2:
                return b""
            rate, channels = wav.getframerate(), wav.getnchannels()
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, ValueError):
        return b""
    return resample_pcm16(pcm, rate, STT_RATE, channels)


def dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 in dB below full scale (-inf for digital silence)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if not samples.size:
        return -math.inf
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf
