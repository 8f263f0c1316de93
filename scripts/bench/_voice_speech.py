"""The benchmark's test speech: short questions spoken by the project's TTS and by espeak-ng.

Piper and Kokoro speak through main's ``POST /v1/audio/speech`` (PCM16 resampled to 16 kHz by
the TTS service); espeak-ng runs as a local program and its 22.05 kHz WAV is resampled here
(numpy FFT). Every utterance is trimmed to its speech (leading and trailing silence cut by
energy), so "the end of the buffer" is the end of speech that voice-to-voice is timed from.
Also the word error rate used to score transcripts against the questions.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

RATE = 16000
QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "What language is spoken in Brazil?",
    "How many minutes are in an hour?",
    "What is the tallest mountain in the world?",
    "Which ocean is the largest?",
    "What do bees make?",
)
SOURCES = ("piper", "kokoro", "espeak")
ESPEAK_HINT = "install it with: sudo apt-get install -y espeak-ng (or pass --sources piper,kokoro)"


@dataclass(frozen=True, slots=True)
class Utterance:
    id: str
    source: str
    voice: str
    text: str
    pcm: bytes
    """PCM16 mono 16 kHz, speech only (trimmed)."""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / RATE

    def info(self) -> dict[str, object]:
        return {"id": self.id, "source": self.source, "voice": self.voice, "text": self.text,
                "duration_s": round(self.duration_s, 3)}


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng")


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited FFT resampling of float mono samples."""
    if rate_in == rate_out:
        return x
    n_out = round(len(x) * rate_out / rate_in)
    spec = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(len(spec), len(out))
    out[:keep] = spec[:keep]
    return np.asarray(np.fft.irfft(out, n=n_out) * (n_out / len(x)), dtype=np.float32)


def trim(pcm: bytes, *, margin_s: float = 0.03) -> bytes:
    """Cut leading and trailing silence: 10 ms windows quieter than max(-50 dBFS, peak - 35 dB)."""
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    win = RATE // 100
    n = len(x) // win
    if n == 0:
        return pcm
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    loud = np.flatnonzero(db > max(-50.0, float(db.max()) - 35.0))
    if len(loud) == 0:
        return pcm
    margin = int(margin_s * RATE)
    start = max(0, int(loud[0]) * win - margin)
    end = min(len(x), (int(loud[-1]) + 1) * win + margin)
    return pcm[start * 2 : end * 2]


def wav_to_pcm16k(data: bytes) -> bytes:
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected a 16-bit WAV, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    x = np.frombuffer(raw, "<i2").astype(np.float32).reshape(-1, channels).mean(axis=1) / 32768.0
    y = resample(x, rate, RATE)
    return bytes((np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


def pcm_to_wav(pcm: bytes, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


async def espeak(text: str, voice: str = "en-us") -> bytes:
    """``text`` spoken by espeak-ng (170 words/min), as trimmed PCM16 16 kHz."""
    binary = espeak_binary()
    if binary is None:
        raise RuntimeError(f"espeak-ng is not installed; {ESPEAK_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        proc = await asyncio.create_subprocess_exec(
            binary, "-v", voice, "-s", "170", "-w", str(out), text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')[-300:]}")
        data = out.read_bytes()
    return trim(wav_to_pcm16k(data))


async def project_tts(http: httpx.AsyncClient, base: str, text: str, voice: str) -> bytes:
    """``text`` spoken by main's ``/v1/audio/speech`` (the voice picks Piper or Kokoro), trimmed PCM16 16 kHz."""
    r = await http.post(f"{base}/v1/audio/speech", json={
        "input": text, "voice": voice, "response_format": "pcm", "sample_rate": RATE, "language": "en-us",
    })
    if r.status_code != 200:
        raise RuntimeError(f"/v1/audio/speech voice={voice!r} answered {r.status_code}: {r.text[:300]}")
    return trim(r.content)


async def make_utterances(
    http: httpx.AsyncClient, base: str, questions: list[str], voices: dict[str, str]
) -> list[Utterance]:
    """Every question in every source of ``voices`` (source -> voice id; espeak's is an espeak voice)."""
    out = []
    for source, voice in voices.items():
        for i, text in enumerate(questions, 1):
            pcm = await espeak(text, voice) if source == "espeak" else await project_tts(http, base, text, voice)
            out.append(Utterance(f"{source}-q{i:02d}", source, voice, text, pcm))
    return out
