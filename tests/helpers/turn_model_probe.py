"""Run in the STT venv: the real Smart Turn model on given WAV-free PCM files, as one JSON line.

    python -m tests.helpers.turn_model_probe FILE.pcm...   (PCM16 mono 16 kHz each)

Prints {"probabilities": [...], "max_feature_diff": ..., "ms": [...], "model": path}: our features
against the reference extractor shipped in the pipecat-ai wheel (loaded from its file alone: it
needs only numpy), and P(complete) per file.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np

from services.runtime.model_files import distribution_file
from services.stt.smart_turn import TurnModel, last_window, log_mel


def reference_features(audio: np.ndarray) -> np.ndarray:
    path = distribution_file("pipecat-ai", "pipecat/audio/turn/smart_turn/_whisper_features.py")
    spec = importlib.util.spec_from_file_location("smart_turn_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: np.ndarray = module.compute_whisper_log_mel_features(last_window(audio), do_normalize=True)
    return out


def main(paths: list[str]) -> None:
    model = TurnModel.load()
    probabilities, diffs, ms = [], [], []
    for path in paths:
        audio = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        diffs.append(float(np.max(np.abs(log_mel(audio) - reference_features(audio)))))
        probabilities.append(model.probability(audio))
        for _ in range(5):
            t = time.perf_counter()
            model.probability(audio)
            ms.append((time.perf_counter() - t) * 1000)
    print(json.dumps({
        "probabilities": probabilities, "max_feature_diff": max(diffs), "ms": sorted(ms),
        "model": str(model.path),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
