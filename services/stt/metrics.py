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
        self.turn_model_seconds = Histogram(
            "uv_stt_turn_model_seconds", "End-of-turn model (Smart Turn) inference time, per pause asked.",
            labels, buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=registry,
        )
        self.turn_decisions = Counter(
            "uv_stt_turn_decisions_total", "End-of-turn model answers at a pause: complete or incomplete.",
            [*labels, "decision"], registry=registry,
        )
        self.utterance_ends = Counter(
            "uv_stt_utterance_ends_total",
            "Utterances ended, by reason: semantic, silence, max_wait, max_length, end_of_input.",
            [*labels, "reason"], registry=registry,
        )
        self.speculations = Counter(
            "uv_stt_speculation_total",
            "Final decodes started at a pause: hit (it became the FINAL) or miss (speech resumed).",
            [*labels, "outcome"], registry=registry,
        )
        self.speculation_wasted = Counter(
            "uv_stt_speculation_wasted_seconds_total",
            "Engine seconds spent on speculative decodes thrown away because speech resumed.", labels,
            registry=registry,
        )
        self.finals_cancelled = Counter(
            "uv_stt_finals_cancelled_total", "Utterance finals dropped at the caller's request (CancelUtterance).",
            labels, registry=registry,
        )
        for metric in (self.audio_seconds, self.rtf, self.streams_active, self.utterances, self.vad_frames,
                       self.final_latency, self.turn_model_seconds, self.speculation_wasted,
                       self.finals_cancelled):
            metric.labels(self.service)  # series at 0 before the first call
        for outcome in ("sent", "skipped"):
            self.partials.labels(self.service, outcome)
        for decision in ("complete", "incomplete"):
            self.turn_decisions.labels(self.service, decision)
        for reason in ("semantic", "silence", "max_wait", "max_length", "end_of_input"):
            self.utterance_ends.labels(self.service, reason)
        for outcome in ("hit", "miss"):
            self.speculations.labels(self.service, outcome)

    def transcribed(self, audio_s: float, seconds: float) -> None:
        self.audio_seconds.labels(self.service).inc(audio_s)
        if audio_s > 0:
            self.rtf.labels(self.service).observe(seconds / audio_s)

    def frames(self, n: int) -> None:
        if n:
            self.vad_frames.labels(self.service).inc(n)

    def partial(self, outcome: str) -> None:
        self.partials.labels(self.service, outcome).inc()

    def turn_decision(self, seconds: float, complete: bool) -> None:
        self.turn_model_seconds.labels(self.service).observe(seconds)
        self.turn_decisions.labels(self.service, "complete" if complete else "incomplete").inc()

    def ended(self, reason: str) -> None:
        self.utterance_ends.labels(self.service, reason).inc()

    def speculation(self, outcome: str, wasted_s: float) -> None:
        self.speculations.labels(self.service, outcome).inc()
        self.speculation_wasted_s(wasted_s)

    def speculation_wasted_s(self, seconds: float) -> None:
        if seconds > 0:
            self.speculation_wasted.labels(self.service).inc(seconds)

    def cancelled(self) -> None:
        self.finals_cancelled.labels(self.service).inc()

    def final(self, latency_s: float) -> None:
        self.utterances.labels(self.service).inc()
        self.final_latency.labels(self.service).observe(latency_s)
