"""The STT service's own Prometheus metrics, beside the runtime's per-call ones.

Transcription volume (seconds of audio in) and real-time factor; for streaming, the streams
open, utterances finalised, partials sent or skipped, VAD frames scored and the end-of-speech
to FINAL latency. Every series exists (at 0) from the start.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from core.context import ServiceContext

RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class SttMetrics:
    def __init__(self, ctx: ServiceContext) -> None:
        registry, self.service = ctx.process.registry, ctx.config.name
        labels = ["service"]
        self.audio_seconds = Counter(
            "uv_stt_audio_seconds_total",
            "Seconds of audio decoded: Transcribe calls and every stream decode (a partial re-decodes the "
            "utterance so far).", labels, registry=registry,
        )
        self.rtf = Histogram(
            "uv_stt_real_time_factor", "Processing time divided by audio duration, per transcription.",
            labels, buckets=RTF_BUCKETS, registry=registry,
        )
        self.streams_active = Gauge(
            "uv_stt_streams_active", "StreamingRecognize streams open now.", labels, registry=registry
        )
        self.utterances = Counter(
            "uv_stt_utterances_total", "Utterances finalised (a FINAL sent) by streams.", labels,
            registry=registry,
        )
        self.partials = Counter(
            "uv_stt_partials_total", "PARTIAL transcripts: sent, or skipped because the engine was busy.",
            [*labels, "outcome"], registry=registry,
        )
        self.vad_frames = Counter(
            "uv_stt_vad_frames_total", "32 ms frames scored by the VAD (streams and DetectSpeech).", labels,
            registry=registry,
        )
        self.final_latency = Histogram(
            "uv_stt_final_latency_seconds", "From SPEECH_ENDED to the utterance's FINAL.", labels,
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        for metric in (self.audio_seconds, self.rtf, self.streams_active, self.utterances, self.vad_frames,
                       self.final_latency):
            metric.labels(self.service)  # series at 0 before the first call
        for outcome in ("sent", "skipped"):
            self.partials.labels(self.service, outcome)

    def transcribed(self, audio_s: float, seconds: float) -> None:
        self.audio_seconds.labels(self.service).inc(audio_s)
        if audio_s > 0:
            self.rtf.labels(self.service).observe(seconds / audio_s)

    def frames(self, n: int) -> None:
        if n:
            self.vad_frames.labels(self.service).inc(n)

    def partial(self, outcome: str) -> None:
        self.partials.labels(self.service, outcome).inc()

    def final(self, latency_s: float) -> None:
        self.utterances.labels(self.service).inc()
        self.final_latency.labels(self.service).observe(latency_s)
