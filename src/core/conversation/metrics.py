"""Where a turn's latency report goes besides the client: Prometheus and one JSON log line.

Histograms (in the process registry, buckets from 50 ms to 10 s):
``ultravox_turn_stage_seconds{stage}`` for each stage duration of
:meth:`LatencyReport.durations`, and ``ultravox_voice_to_voice_seconds`` (end of the user's
speech to the first reply audio byte sent). Counters: ``ultravox_turns_total{outcome}`` (ok,
interrupted, degraded for turns that ran; rejected for turns refused before they ran, by
admission or for bad input; failed for a bug), ``ultravox_turn_degraded_total{stage}`` and
``ultravox_barge_ins_total``. Every known label value starts at 0, so dashboards have series
before the first turn.

Errors go to ``ultravox_errors_total{source="conversation", type=<code>}``: a turn not run (or
failed), and every ``error`` event with a ``stage`` a turn or stream sends its client (STT
stream broken, TTS failed, store failed...), counted by :class:`CountingSink`.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.conversation.types import EventSink, TurnRecord
from core.error_metrics import error_metrics
from core.errors import CallError

BUCKETS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
           7.5, 10.0)
STAGE_KEYS = {
    "vad_s": "vad", "stt_s": "stt", "llm_first_token_s": "llm_first_token", "first_chunk_s": "first_chunk",
    "tts_first_audio_s": "tts_first_audio", "send_s": "send", "total_s": "total",
}
OUTCOMES = ("ok", "interrupted", "degraded", "rejected", "failed")
DEGRADED_STAGES = ("stt", "llm", "tts")


class TurnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stages = Histogram(
            "ultravox_turn_stage_seconds", "Duration of each stage of a conversation turn.", ["stage"],
            registry=registry, buckets=BUCKETS,
        )
        self.voice_to_voice = Histogram(
            "ultravox_voice_to_voice_seconds", "End of the user's speech to the first reply audio byte sent.",
            registry=registry, buckets=BUCKETS,
        )
        self.turns = Counter(
            "ultravox_turns", "Conversation turns by outcome (rejected: refused before it ran).", ["outcome"],
            registry=registry,
        )
        self.degraded = Counter(
            "ultravox_turn_degraded", "Degraded turns by the stage that failed.", ["stage"], registry=registry
        )
        self.barge_ins = Counter(
            "ultravox_barge_ins", "Replies cut short because the user spoke (or asked) over them.",
            registry=registry,
        )
        self.barge_in_checks = Counter(
            "ultravox_barge_in_checks",
            "Speech over a reply, held as a possible interruption: confirmed (it lasted or had words: the reply "
            "stopped) or resumed (a noise, a cough, the reply's own echo: the paused reply went on).",
            ["outcome"], registry=registry,
        )
        self.echo_frames = Counter(
            "ultravox_echo_frames",
            "Microphone frames while a reply played: echo removed (passed on cleaned) or suppressed (silenced).",
            ["action"], registry=registry,
        )
        self.errors = error_metrics(registry)
        for outcome in ("confirmed", "resumed"):
            self.barge_in_checks.labels(outcome)
        for action in ("cleaned", "suppressed"):
            self.echo_frames.labels(action)
        for stage in STAGE_KEYS.values():
            self.stages.labels(stage)
        for outcome in OUTCOMES:
            self.turns.labels(outcome)
        for stage in DEGRADED_STAGES:
            self.degraded.labels(stage)

    def observe(self, record: TurnRecord, log: logging.Logger) -> None:
        """Count the turn, observe its stage durations and log its report as one line."""
        self.turns.labels(record.outcome).inc()
        if record.degraded:
            self.degraded.labels(record.degraded).inc()
        if record.interrupted:
            self.barge_ins.inc()
        fields: dict[str, float | str | bool] = {
            "session_id": record.session_id, "turn_id": record.turn_id,
            "outcome": record.outcome, "interrupted": record.interrupted, "degraded": record.degraded,
        }
        for key, value in record.latency.items():
            if not isinstance(value, float | int):
                continue
            fields[key] = value
            if key == "voice_to_voice_s":
                self.voice_to_voice.observe(value)
            elif key in STAGE_KEYS:
                self.stages.labels(STAGE_KEYS[key]).observe(value)
        log.info("turn latency", extra={"event": "turn_latency", **fields})

    def not_run(self, err: BaseException) -> None:
        """A turn that raised out of the orchestrator: rejected (a ``CallError``) or failed (a bug)."""
        if isinstance(err, CallError):
            self.turns.labels("rejected").inc()
            self.errors.count("conversation", err.code)
        else:
            self.turns.labels("failed").inc()
            self.errors.count("conversation", "INTERNAL")

    def watch(self, sink: EventSink) -> EventSink:
        """``sink`` as seen by the conversation layer: stage error events are counted on the way."""
        return sink if isinstance(sink, CountingSink) else CountingSink(sink, self)


class CountingSink:
    """Forwards everything to the transport's sink; counts ``error`` events that name a ``stage``.

    Errors without a stage are a turn that was not run, which :meth:`TurnMetrics.not_run`
    counts where it is raised (so they are not counted twice).
    """

    def __init__(self, inner: EventSink, metrics: TurnMetrics) -> None:
        self.inner, self._metrics = inner, metrics

    async def send_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error" and event.get("stage"):
            self._metrics.errors.count("conversation", str(event.get("code") or "INTERNAL"))
        await self.inner.send_event(event)

    async def send_audio(self, pcm: bytes) -> None:
        await self.inner.send_audio(pcm)
