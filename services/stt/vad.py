"""Silero VAD v6 (the ONNX file shipped inside faster-whisper) on onnxruntime, without torch.

The model scores 32 ms frames (512 samples at 16 kHz), each preceded by the previous frame's
last 64 samples, and carries an LSTM state (``h`` and ``c``, each (1, 1, 128)) from frame to
frame. Its input is (n, 576): n frames scored in one ``run`` give exactly the probabilities of
n single-frame runs, so a stream scores whatever complete frames a chunk brings in one call.

:class:`SileroVad` is the session, shared by every stream (``InferenceSession.run`` is thread
safe); :class:`SileroStream` is one stream's state. The state runs on across utterances, as in
Silero's own ``VADIterator``: the model was trained on continuous audio, and a reset would cost
a few frames of warm-up at every turn. A new stream starts from zeros.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import ConfigError

FRAME = 512
CONTEXT = 64
STATE_SHAPE = (1, 1, 128)
MODEL_FILE = "silero_vad_v6.onnx"


class FrameScorer(Protocol):
    """One stream's VAD: audio in, one speech probability per complete 512-sample frame out."""

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Score the frames that ``samples`` (float32 mono 16 kHz, any length) complete; keep the rest."""
        ...


class VadModel(Protocol):
    def stream(self) -> FrameScorer:
        """A scorer with fresh state, for one stream or one clip."""
        ...


def locate_model(configured: str, where: str) -> Path:
    """The configured ONNX file, else the one inside the installed faster-whisper package."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(where, "options.vad.model_path", f"no Silero VAD ONNX file at {path}")
        return path
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise ConfigError(
            where, "options.vad.model_path",
            "faster-whisper is not installed, so its Silero VAD model is missing; install the 'stt' extra "
            f"or point options.vad.model_path at a {MODEL_FILE} file",
        )
    path = Path(spec.origin).parent / "assets" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(
            where, "options.vad.model_path",
            f"this faster-whisper has no {path}; use faster-whisper 1.2 or set options.vad.model_path",
        )
    return path


class SileroVad:
    """The ONNX session; see the module docstring."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime  # noqa: PLC0415 - in the stt extra; imported with the model

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        self.path = path
        self._session: Any = onnxruntime.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        names = {i.name: list(i.shape) for i in self._session.get_inputs()}
        if set(names) != {"input", "h", "c"} or names["input"][-1] != FRAME + CONTEXT:
            raise ValueError(
                f"{path} is not a Silero VAD v6 model: inputs {names}; expected input (n, {FRAME + CONTEXT}), "
                "h and c (1, 1, 128)"
            )

    def stream(self) -> SileroStream:
        return SileroStream(self)

    def run(self, batch: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score (n, 576) context-prefixed frames; returns (n probabilities, h, c)."""
        probs, h, c = self._session.run(None, {"input": batch, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c


class SileroStream:
    """One stream's LSTM state, the 64-sample context and the samples of the unfinished frame."""

    def __init__(self, model: SileroVad) -> None:
        self.model = model
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(audio) // FRAME
        self._pending = audio[n * FRAME :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: n * FRAME].reshape(n, FRAME)
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -CONTEXT:]
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1))
        probs, self._h, self._c = self.model.run(batch, self._h, self._c)
        self._context = frames[-1, -CONTEXT:].copy()
        self.frames += n
        return probs
