"""Kokoro-82M (int8 ONNX, via kokoro-onnx) behind the TtsEngine protocol.

The onnxruntime session is built here so the intra-op thread count is ours
(``options.intra_op_threads``), then handed to ``Kokoro.from_session``. Text is phonemized by
espeak-ng for the request's language (kokoro-onnx serialises espeak itself; inference may run
on several threads at once). A Kokoro voice id's first letter is its language (``a`` American
English, ``p`` Brazilian Portuguese, ``j`` Japanese...); any voice can speak any language
listed in ``LANGUAGES``, with its own accent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidArgument
from services.tts import model_store
from services.tts.engine import EngineInfo, ModelLoadError, SpeedRange, VoiceInfo
from services.tts.options import TtsOptions
from services.tts.text_norm import normalize_for_espeak

SAMPLE_RATE = 24_000
SPEEDS = SpeedRange(0.5, 2.0)
"""kokoro-onnx refuses other speeds."""
LANGUAGES = ("en-us", "en-gb", "pt-br", "es", "fr-fr", "it", "hi")
"""espeak-ng languages Kokoro was trained on (Japanese and Chinese need other phonemizers)."""
VOICE_PREFIX = {
    "a": ("en-us", "American English"), "b": ("en-gb", "British English"), "e": ("es", "Spanish"),
    "f": ("fr-fr", "French"), "h": ("hi", "Hindi"), "i": ("it", "Italian"), "j": ("ja", "Japanese"),
    "p": ("pt-br", "Brazilian Portuguese"), "z": ("cmn", "Mandarin Chinese"),
}
GENDER = {"f": "female", "m": "male"}


class KokoroEngine:
    name = "kokoro"

    def __init__(self, options: TtsOptions, model: str, models_dir: str, service: str = "tts") -> None:
        self.options = options
        self.model = model
        self.models_dir = Path(models_dir)
        self.service = service
        self._kokoro: Any = None

    def load(self) -> EngineInfo:
        model_path = model_store.kokoro_model(self.model, self.models_dir, self.service)
        voices_path = model_store.kokoro_voices(self.options.voices_path, self.service)
        try:
            import onnxruntime as ort  # noqa: PLC0415 - heavy; imported in the load thread
            from kokoro_onnx import Kokoro  # noqa: PLC0415

            # phonemizer warns "words count mismatch" whenever punctuation is kept, i.e. on every call
            logging.getLogger("phonemizer").setLevel(logging.ERROR)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.options.intra_op_threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
            self._kokoro = Kokoro.from_session(session, str(voices_path))
            voice_ids = list(self._kokoro.get_voices())
        except Exception as e:
            raise ModelLoadError(
                f"Kokoro could not load model {model_path} with voices {voices_path} ({type(e).__name__}: {e}); "
                "check that the model is a Kokoro v1.0 ONNX export and the voices file a Kokoro voices .npz"
            ) from e
        if not voice_ids:
            raise ModelLoadError(f"Kokoro voices file {voices_path} holds no voices")
        voices = tuple(self.voice_info(v) for v in voice_ids)
        default = self.options.default_voice if self.options.default_voice in voice_ids else voice_ids[0]
        return EngineInfo(
            name=self.name, sample_rate=SAMPLE_RATE, voices=voices, default_voice=default, speeds=SPEEDS,
            model=self.model,
            details={"model_path": str(model_path), "voices_path": str(voices_path),
                     "intra_op_threads": str(self.options.intra_op_threads)},
        )

    def voice_info(self, voice_id: str) -> VoiceInfo:
        own, language_name = VOICE_PREFIX.get(voice_id[:1], ("", "unknown language"))
        first = own if own in LANGUAGES else self.options.default_language
        languages = (first, *(lang for lang in LANGUAGES if lang != first))
        gender = GENDER.get(voice_id[1:2], "")
        return VoiceInfo(
            id=voice_id, engine=self.name, languages=languages, gender=gender,
            description=f"Kokoro voice, {language_name}{', ' + gender if gender else ''}; speaks "
            f"{', '.join(LANGUAGES)} through espeak-ng phonemes",
        )

    def synthesize(self, text: str, voice: str, language: str, speed: float) -> np.ndarray:
        if self._kokoro is None:
            raise RuntimeError("KokoroEngine.synthesize called before load()")
        try:
            samples, _rate = self._kokoro.create(
                normalize_for_espeak(text, language), voice=voice, speed=speed, lang=language
            )
        except ValueError as e:  # nothing pronounceable, or a limit kokoro-onnx enforces
            raise InvalidArgument(f"Kokoro cannot speak {text[:60]!r} in {language}: {e}") from e
        return np.asarray(samples, dtype=np.float32).reshape(-1)

    def close(self) -> None:
        self._kokoro = None
