"""Prometheus metrics of the session layer and admission control, in the process's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SAVED_OUTCOMES = ("ok", "interrupted", "degraded")


class SessionMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.active = Gauge(
            "ultravox_sessions_active", "Sessions held in memory now.", registry=registry
        )
        self.created = Counter(
            "ultravox_sessions_created_total", "Sessions created since main started.", registry=registry
        )
        self.resumed = Counter(
            "ultravox_sessions_resumed_total", "Sessions rebuilt from the store (after eviction or a restart).",
            registry=registry,
        )
        self.evicted = Counter(
            "ultravox_sessions_evicted_total", "Sessions dropped from memory after their idle timeout.",
            registry=registry,
        )
        self.rejected = Counter(
            "ultravox_sessions_rejected_total", "Session creations refused because max_sessions was reached.",
            registry=registry,
        )
        self.turns_saved = Counter(
            "ultravox_turns_saved_total", "Finished turns written to the conversation store, by outcome.",
            ["outcome"], registry=registry,
        )
        for outcome in SAVED_OUTCOMES:  # series from the start, so dashboards show 0 instead of nothing
            self.turns_saved.labels(outcome)


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.in_flight = Gauge(
            "ultravox_turns_in_flight", "Turns holding an admission slot now, across all sessions.",
            registry=registry,
        )
        self.waiting = Gauge(
            "ultravox_turns_waiting", "Turns waiting (at most admission_wait_s) for a slot.", registry=registry
        )
        self.rejections = Counter(
            "ultravox_admission_rejections_total",
            "Turns refused by admission control (503 / error event): every slot busy past admission_wait_s.",
            registry=registry,
        )
        self.wait = Histogram(
            "ultravox_admission_wait_seconds", "Time admitted turns waited for a slot.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0), registry=registry,
        )
