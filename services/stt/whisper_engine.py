"""faster-whisper (CTranslate2) behind the SttEngine protocol."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import InvalidArgument
from services.stt.engine import DecodeOptions, ModelLoadError, SegmentResult, Transcript
from services.stt.options import SttOptions


class FasterWhisperEngine:
    """One WhisperModel with ``max_concurrency`` CTranslate2 workers, so that many calls may run at once."""

    def __init__(self, options: SttOptions, device: str, download_root: str) -> None:
        self.options = options
        self.device = device
        self.download_root = download_root
        self._model: Any = None
        self._languages: frozenset[str] = frozenset()

    def load(self, model_ref: str) -> None:
        from faster_whisper import WhisperModel  # noqa: PLC0415 - heavy; imported in the load thread

        try:
            model = WhisperModel(
                model_ref,
                device=self.device,
                compute_type=self.options.compute_type,
                cpu_threads=self.options.cpu_threads,
                num_workers=self.options.max_concurrency,
                download_root=self.download_root,
            )
        except Exception as e:
            raise ModelLoadError(
                f"faster-whisper could not load {model_ref!r} on {self.device} with compute_type "
                f"{self.options.compute_type!r} ({type(e).__name__}: {e}); a hub id needs internet "
                "access once to download, so offline use a local CTranslate2 folder or embedded:whisper-base"
            ) from e
        self._languages = frozenset(model.supported_languages)
        self._model = model

    def languages(self) -> frozenset[str]:
        return self._languages

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcript:
        if self._model is None:
            raise RuntimeError("FasterWhisperEngine.transcribe called before load()")
        if options.language is not None and options.language not in self._languages:
            sample = ", ".join(sorted(self._languages)[:12])
            raise InvalidArgument(
                f"language {options.language!r} is not supported by this model; use an ISO-639-1 code "
                f"({sample}, ...) or 'auto' to detect it"
            )
        segments, info = self._model.transcribe(
            samples,
            language=options.language,
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt,
            vad_filter=options.vad_filter,
        )
        raw = list(segments)  # a generator: decoding happens while we iterate
        out = tuple(
            SegmentResult(
                start_s=float(s.start), end_s=float(s.end), text=s.text.strip(),
                avg_logprob=float(s.avg_logprob), no_speech_prob=float(s.no_speech_prob),
            )
            for s in raw
        )
        return Transcript(
            text="".join(s.text for s in raw).strip(),  # Whisper puts the spaces between words itself
            segments=out,
            language=info.language,
            language_probability=float(info.language_probability),
        )

    def close(self) -> None:
        self._model = None
