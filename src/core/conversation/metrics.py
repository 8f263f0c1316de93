"""Where a turn's latency report goes besides the client: Prometheus and one JSON log line.

Histograms (in the process registry, buckets from 50 ms to 10 s):
``ultravox_turn_stage_seconds{stage}`` for each stage duration of
:meth:`LatencyReport.durations`, and ``ultravox_voice_to_voice_seconds`` (end of the user's
speech to the first reply audio byte sent). Counters: ``ultravox_turns_total{outcome}``,
``ultravox_turn_degraded_total{stage}`` and ``ultravox_barge_ins_total``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.conversation.types import TurnRecord

BUCKETS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
           7.5, 10.0)
STAGE_KEYS = {
    "vad_s": "vad", "stt_s": "stt", "llm_first_token_s": "llm_first_token", "first_chunk_s": "first_chunk",
    "tts_first_audio_s": "tts_first_audio", "send_s": "send", "total_s": "total",
}


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
            "ultravox_turns", "Finished conversation turns by outcome.", ["outcome"], registry=registry
        )
        self.degraded = Counter(
            "ultravox_turn_degraded", "Degraded turns by the stage that failed.", ["stage"], registry=registry
        )
        self.barge_ins = Counter(
            "ultravox_barge_ins", "Replies cut short because the user spoke (or asked) over them.",
            registry=registry,
        )

    def observe(self, record: TurnRecord, log: logging.Logger) -> None:
        """Count the turn, observe its stage durations and log its report as one line."""
        self.turns.labels(record.outcome).inc()
        if record.degraded:
            self.degraded.labels(record.degraded).inc()
        if record.interrupted:
            self.barge_ins.inc()
        fields: dict[str, float | str | bool] = {
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
