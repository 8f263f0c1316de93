"""Prometheus metrics of the TTS service, on the process's own registry, per engine.

``method`` is Synthesize or SynthesizeStream (the OpenAI route counts as Synthesize); time to
first audio is the whole synthesis for Synthesize and the first chunk for SynthesizeStream.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

TTFA_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class TtsMetrics:
    def __init__(self, registry: CollectorRegistry, service: str, engines: Iterable[str] = ()) -> None:
        """``engines``: the engines this service loads; their series start at 0."""
        self.service = service
        self.characters = Counter(
            "uv_tts_characters_total", "Characters of text accepted for synthesis.",
            ["service", "engine"], registry=registry,
        )
        self.audio_seconds = Counter(
            "uv_tts_audio_seconds_total", "Seconds of audio synthesised and sent.",
            ["service", "engine"], registry=registry,
        )
        self.pieces = Counter(
            "uv_tts_pieces_total", "Pieces of text (clauses, sentences) the engine synthesised.",
            ["service", "engine"], registry=registry,
        )
        self.first_audio = Histogram(
            "uv_tts_time_to_first_audio_seconds",
            "From the request's arrival to its first audio being ready, by engine and method.",
            ["service", "engine", "method"], buckets=TTFA_BUCKETS, registry=registry,
        )
        self.rtf = Histogram(
            "uv_tts_real_time_factor", "Synthesis time divided by audio duration, per finished request.",
            ["service", "engine"], buckets=RTF_BUCKETS, registry=registry,
        )
        for engine in engines:
            for metric in (self.characters, self.audio_seconds, self.pieces, self.rtf):
                metric.labels(service, engine)
            for method in ("Synthesize", "SynthesizeStream"):
                self.first_audio.labels(service, engine, method)

    def accepted(self, engine: str, chars: int) -> None:
        self.characters.labels(self.service, engine).inc(chars)

    def piece(self, engine: str) -> None:
        self.pieces.labels(self.service, engine).inc()

    def first(self, engine: str, method: str, seconds: float) -> None:
        self.first_audio.labels(self.service, engine, method).observe(seconds)

    def audio(self, engine: str, seconds: float) -> None:
        self.audio_seconds.labels(self.service, engine).inc(seconds)

    def finished(self, engine: str, elapsed_s: float, audio_s: float) -> None:
        if audio_s > 0:
            self.rtf.labels(self.service, engine).observe(elapsed_s / audio_s)
