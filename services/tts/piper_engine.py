"""Piper (piper-tts 1.8) behind the TtsEngine protocol: fast, one language per voice.

``PiperVoice.load`` gives no say over threads, so the session is built here with
``options.intra_op_threads`` and handed to ``PiperVoice`` with the voice's config. Piper's
espeak bridge holds process-global state, so one synthesis runs at a time (Piper is ~10x faster
than real time, so the lock costs little). The voice id is the model file's stem
(``en_US-joe-medium``); it speaks only its espeak language, and a request for another gets a
400 that points to Kokoro.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidArgument
from services.tts import model_store
from services.tts.audio import SENTENCE_PAUSE_S, silence, trim_silence
from services.tts.engine import EngineInfo, ModelLoadError, SpeedRange, VoiceInfo, canonical_language
from services.tts.options import TtsOptions

SPEEDS = SpeedRange(0.25, 4.0)


class PiperEngine:
    name = "piper"

    def __init__(self, options: TtsOptions, model: str, models_dir: str, service: str = "tts") -> None:
        self.options = options
        self.model = options.piper_model
        self.service = service
        self._voice: Any = None
        self._voice_id = ""
        self._rate = 0
        self._lock = threading.Lock()

    def load(self) -> EngineInfo:
        onnx, config_path = model_store.piper_model(self.model, self.service)
        try:
            import onnxruntime as ort  # noqa: PLC0415 - heavy; imported in the load thread
            from piper import PiperVoice  # noqa: PLC0415
            from piper.config import PiperConfig  # noqa: PLC0415

            raw = json.loads(Path(config_path).read_text(encoding="utf-8"))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.options.intra_op_threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
            self._voice = PiperVoice(config=PiperConfig.from_dict(raw), session=session)
        except Exception as e:
            raise ModelLoadError(
                f"Piper could not load voice {onnx} with config {config_path} ({type(e).__name__}: {e}); "
                "use a Piper .onnx voice with its .onnx.json beside it, or embedded:joe-us-medium"
            ) from e
        self._rate = int(self._voice.config.sample_rate)
        self._voice_id = onnx.name.removesuffix(".onnx")
        language = canonical_language(str(self._voice.config.espeak_voice))
        name = raw.get("language", {}).get("name_english") or language
        voice = VoiceInfo(
            id=self._voice_id, engine=self.name, languages=(language,),
            description=f"Piper voice {raw.get('dataset') or self._voice_id} ({name}, "
            f"{raw.get('audio', {}).get('quality', '')} quality, {self._rate} Hz)",
        )
        return EngineInfo(
            name=self.name, sample_rate=self._rate, voices=(voice,), default_voice=self._voice_id,
            speeds=SPEEDS, model=self.model,
            details={"model_path": str(onnx), "intra_op_threads": str(self.options.intra_op_threads)},
        )

    def synthesize(self, text: str, voice: str, language: str, speed: float) -> np.ndarray:
        if self._voice is None:
            raise RuntimeError("PiperEngine.synthesize called before load()")
        from piper.config import SynthesisConfig  # noqa: PLC0415

        config = SynthesisConfig(length_scale=float(self._voice.config.length_scale) / speed)
        with self._lock:
            parts = [np.asarray(c.audio_float_array, np.float32) for c in self._voice.synthesize(text, config)]
        parts = [trim_silence(p, self._rate) for p in parts if p.size]
        if not parts:
            raise InvalidArgument(f"Piper found nothing to pronounce in {text[:60]!r}")
        gap = silence(SENTENCE_PAUSE_S, self._rate)
        joined: list[np.ndarray] = []
        for i, part in enumerate(parts):
            joined += [gap, part] if i else [part]
        return np.concatenate(joined)

    def close(self) -> None:
        self._voice = None
