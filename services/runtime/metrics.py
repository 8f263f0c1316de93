"""Prometheus metrics every service exports, registered on the process's own registry.

Labels stay low-cardinality: service, method, protocol and outcome (``ok``, ``cancelled`` when
the client went away, or the lower-case status code, e.g. ``invalid_argument``). A streaming
call counts once in the call metrics, and each of its messages in
``uv_service_stream_messages_total``. A call that fails (any outcome but ``ok`` and
``cancelled``) also counts in ``uv_service_errors_total{service, method, code}`` with its
upper-case status code (``INVALID_ARGUMENT``, ``UNAVAILABLE``, ``INTERNAL``...).

With the service's ``role``, every operation of the role starts with its series at 0 (calls
``ok`` over each transport, in-flight, ``INTERNAL`` errors), so dashboards and alert rules see
the service before its first call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.wire import CONTROL_OPS, operations

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HUB_PROTOCOLS = ("grpc", "msgpack", "json")
NOT_ERRORS = frozenset({"ok", "cancelled"})


class RuntimeMetrics:
    """Calls, latency, in-flight calls, stream messages, readiness and model load time of one service."""

    def __init__(self, registry: CollectorRegistry, service: str, role: str | None = None) -> None:
        self.service = service
        self.calls = Counter(
            "uv_service_calls_total",
            "Operation calls handled by this service, by method, protocol and outcome.",
            ["service", "method", "protocol", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "uv_service_call_duration_seconds",
            "Wall time from receiving a decoded request to having its reply (for a stream: to its end), "
            "by method and protocol.",
            ["service", "method", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "uv_service_calls_in_flight",
            "Operation calls being handled right now, by method.",
            ["service", "method"],
            registry=registry,
        )
        self.stream_messages = Counter(
            "uv_service_stream_messages_total",
            "Messages of streaming calls, by method, protocol and direction (in: requests, out: responses).",
            ["service", "method", "protocol", "direction"],
            registry=registry,
        )
        self.first_message = Histogram(
            "uv_service_stream_first_message_seconds",
            "Time from a streaming call's start to its first response message, by method and protocol.",
            ["service", "method", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ready = Gauge(
            "uv_service_ready",
            "1 once the model is loaded and the service is SERVING, else 0.",
            ["service"],
            registry=registry,
        )
        self.model_load = Gauge(
            "uv_service_model_load_seconds",
            "Seconds the last model load took (model assembly included).",
            ["service"],
            registry=registry,
        )
        self.errors = Counter(
            "uv_service_errors_total",
            "Calls that failed (refused, rejected or crashed), by method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.ready.labels(service).set(0)
        self.model_load.labels(service)
        if role is not None:
            self._prime(role)

    def _prime(self, role: str) -> None:
        for method in operations(role):
            if method in CONTROL_OPS:
                continue
            for protocol in HUB_PROTOCOLS:
                self.calls.labels(self.service, method, protocol, "ok")
            self.in_flight.labels(self.service, method)
            self.errors.labels(self.service, method, "INTERNAL")

    def observe(self, method: str, protocol: str, outcome: str, seconds: float | None) -> None:
        """Count one call; ``seconds`` is None for calls refused before a handler ran."""
        self.calls.labels(self.service, method, protocol, outcome).inc()
        if outcome not in NOT_ERRORS:
            self.errors.labels(self.service, method, outcome.upper()).inc()
        if seconds is not None:
            self.latency.labels(self.service, method, protocol).observe(seconds)
