"""Semantic end of turn: Smart Turn v3.2 reads the end of an utterance and says whether the user is done.

The model (8 MB ONNX, BSD-2, a Whisper-tiny encoder and a classifier) comes inside the
``pipecat-ai`` wheel, which the ``stt`` extra installs for this one data file (no pipecat code
is imported, and none of its dependencies is installed: see ``pyproject.toml``). Its input is the
last 8 s of 16 kHz audio as an 80 x 800 Whisper log-mel spectrogram, its output P(complete).

The features are computed here with numpy, from the published definition (Whisper's feature
extractor with an 8 s window): the window is the last 8 s, zero-padded in front; the waveform is
normalised to zero mean and unit variance; a centred (reflect-padded) STFT with a periodic Hann
window of 400 samples, hop 160; the power spectrum through 80 Slaney-normalised Slaney-scale mel
filters from 0 to 8 kHz; log10 with a 1e-10 floor; the last frame dropped; values clamped to 8 below
the maximum; then (x + 4) / 4. tests/integration/test_turn_model.py checks them against the
reference inside the wheel.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from services.runtime.model_files import PackageFileMissing, PackageNotInstalled, distribution_file

SAMPLE_RATE = 16_000
WINDOW_S = 8
N_FFT = 400
HOP = 160
N_MELS = 80
DISTRIBUTION = "pipecat-ai"
MODEL_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
NAME = "smart-turn-v3.2"


class TurnModelMissing(LookupError):
    """The model file is not there: the message says which path or package, and what to do."""


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    mel: np.ndarray = np.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    hz: np.ndarray = np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))
    return hz


@functools.cache
def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, each scaled to unit area (Slaney normalisation)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles: np.ndarray = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return triangles


@functools.cache
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann


def last_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of ``audio`` (float mono 16 kHz), zero-padded in front to exactly 8 s."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    size = WINDOW_S * SAMPLE_RATE
    if samples.size >= size:
        return samples[-size:]
    return np.concatenate([np.zeros(size - samples.size, dtype=np.float32), samples])


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Smart Turn's input for ``audio``: (80, 800) float32 log-mel features of its last 8 s."""
    samples = np.asarray(audio)
    if samples.size and not np.all(np.isfinite(samples)):
        raise ValueError("audio for the turn model has NaN or infinite samples; send finite PCM samples")
    x = last_window(samples)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _window(), axis=-1)) ** 2
    mel = np.log10(np.maximum(_mel_filters() @ power.T, 1e-10))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    features: np.ndarray = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


def locate(path: str = "") -> Path:
    """The model file: ``path`` when set, else the one inside the installed pipecat-ai wheel."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise TurnModelMissing(
                f"no end-of-turn model at {p}; set options.turn.model_path to a Smart Turn v3 .onnx file, "
                "or leave it empty for the one in the pipecat-ai wheel"
            )
        return p
    try:
        return distribution_file(DISTRIBUTION, MODEL_FILE)
    except PackageNotInstalled:
        raise TurnModelMissing(
            f"the {DISTRIBUTION} wheel (which carries Smart Turn v3.2) is not installed in the STT venv; "
            "it is part of the stt extra: rebuild the venv (./start.sh does), or set options.turn.model_path"
        ) from None
    except PackageFileMissing as e:
        raise TurnModelMissing(
            f"{DISTRIBUTION} is installed but has no {MODEL_FILE} ({e}); install pipecat-ai==1.14.0 as uv.lock pins it"
        ) from None


class TurnModel:
    """P(turn complete) for the end of an utterance; safe to call from worker threads."""

    name = NAME

    def __init__(self, session: Any, path: Path) -> None:
        self._session, self.path = session, path
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: str = "", threads: int = 1) -> TurnModel:
        """Open the ONNX model (``path``, or the wheel's); TurnModelMissing when there is none."""
        import onnxruntime as ort  # noqa: PLC0415  (the STT venv has it; main's venv imports this for the features)

        where = locate(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(where), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(session, where)

    def probability(self, audio: np.ndarray) -> float:
        """P(the user finished their turn) from the end of ``audio`` (float mono 16 kHz in [-1, 1])."""
        features = log_mel(audio)[None, :, :]
        out = self._session.run(None, {self._input: features})
        return float(np.clip(np.asarray(out[0]).reshape(-1)[0], 0.0, 1.0))
