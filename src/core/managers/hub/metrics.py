"""The hub's Prometheus metrics, plus plain counters for the JSON views (``snapshot``).

Created per CommunicationManager in its process's registry (never module-level), so two
registries never share series. Label children are cached: a labelled ``inc`` or ``observe``
then costs a dict lookup, which keeps the hub's own overhead per call in microseconds.

    ultravox_hub_calls_total{service,method,protocol,outcome}      one per transport attempt
    ultravox_hub_failed_calls_total{service,method,code}           one per call failed for its caller
    ultravox_hub_call_duration_seconds{service,method,protocol}     successful attempts only
    ultravox_hub_fallbacks_total{service,from_protocol,to_protocol} a call moved to the next protocol
    ultravox_hub_retries_total{service}                             a new round after all failed
    ultravox_hub_breaker_state{service}                             0 closed, 1 half-open, 2 open
    ultravox_hub_stream_messages_total{service,method,protocol}     response messages of streams
    ultravox_hub_stream_first_message_seconds{service,method,protocol}  open to first message

``outcome`` is ``ok``, ``transport_error``, ``circuit_open``, ``cancelled`` (a stream its
consumer closed early) or the lower-case status name of the error (``invalid_argument``,
``deadline_exceeded``, ``unavailable``, ``internal``...). Calls refused by an open breaker have
``protocol="none"``. A stream counts as one attempt per transport tried, and its duration is
the whole stream's.

A call that fails (after its fallbacks and retries), and a live stream that breaks, count once
in ``ultravox_hub_failed_calls_total`` and in ``ultravox_errors_total{source="hub", type=<code>}``.
Attempts are not calls: a gRPC attempt that fails and falls back to msgpack successfully is a
``transport_error`` attempt but no failed call. Each call ends in exactly one ``ok`` or
``cancelled`` attempt, or in one failed call: their sum is the HighErrorRate alert's
denominator. ``prime`` gives every configured service its series at 0 (calls by method and
protocol, fallbacks, retries, breaker closed), so dashboards show data before the first call.

Retries are rounds, not attempts over one protocol, so ``ultravox_hub_retries_total`` is per
service. ``ServiceStats`` also counts how retried calls ended (``retries_succeeded``: a later
round answered; ``retries_exhausted``: every round failed) for ``GET /api/resilience``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.error_metrics import error_metrics
from core.errors import CallError, CircuitOpen, TransportError
from core.managers.hub.breaker import BreakerState
from core.wire import CONTROL_OPS, operations

# Sub-millisecond resolution for loopback control calls, up to the longest deadlines.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
NO_PROTOCOL = "none"


def outcome_of(err: CallError | None) -> str:
    if err is None:
        return "ok"
    if isinstance(err, TransportError):
        return "transport_error"
    if isinstance(err, CircuitOpen):
        return "circuit_open"
    return err.code.lower()


@dataclass(slots=True)
class ServiceStats:
    """Plain counts for one service, for JSON views."""

    calls: defaultdict[str, defaultdict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    fallbacks: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    """Retry rounds started (each one after a round that failed transiently)."""
    retries_succeeded: int = 0
    """Calls (and stream opens) answered in a round after the first."""
    retries_exhausted: int = 0
    """Calls that failed transiently in every round (``max_retries`` spent)."""
    stream_messages: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": {p: dict(o) for p, o in self.calls.items()},
            "fallbacks": dict(self.fallbacks),
            "retries": self.retries,
            "retries_succeeded": self.retries_succeeded,
            "retries_exhausted": self.retries_exhausted,
            "stream_messages": dict(self.stream_messages),
            "last_error": self.last_error,
        }


class HubMetrics:
    """Every metric the hub records, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter(
            "ultravox_hub_calls_total",
            "Transport attempts made by the hub, by service, method, protocol and outcome.",
            ["service", "method", "protocol", "outcome"], registry=registry,
        )
        self._latency = Histogram(
            "ultravox_hub_call_duration_seconds",
            "Latency of successful hub calls over one transport, by service, method and protocol.",
            ["service", "method", "protocol"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self._fallbacks = Counter(
            "ultravox_hub_fallbacks_total",
            "Calls moved to the next protocol because one failed or was known to be down.",
            ["service", "from_protocol", "to_protocol"], registry=registry,
        )
        self._retries = Counter(
            "ultravox_hub_retries_total",
            "Retry rounds after every transport of a call failed transiently, by service.",
            ["service"], registry=registry,
        )
        self._failed = Counter(
            "ultravox_hub_failed_calls_total",
            "Hub calls that failed for their caller after every fallback and retry (and live streams "
            "that broke), by service, method and status code.",
            ["service", "method", "code"], registry=registry,
        )
        self._breaker = Gauge(
            "ultravox_hub_breaker_state",
            "Circuit breaker state per service: 0 closed, 1 half-open, 2 open.",
            ["service"], registry=registry,
        )
        self._messages = Counter(
            "ultravox_hub_stream_messages_total",
            "Response messages received on streams, by service, method and protocol.",
            ["service", "method", "protocol"], registry=registry,
        )
        self._first = Histogram(
            "ultravox_hub_stream_first_message_seconds",
            "Time from opening a stream over one transport to its first response message.",
            ["service", "method", "protocol"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._errors = error_metrics(registry)
        self.stats: defaultdict[str, ServiceStats] = defaultdict(ServiceStats)

    def prime(self, services: Mapping[str, str], protocols: Sequence[str]) -> None:
        """Series at 0 for ``services`` (name -> role) over ``protocols`` (the fallback order)."""
        for service, role in services.items():
            for method in operations(role):
                if method in CONTROL_OPS:
                    continue
                for protocol in protocols:
                    self._calls.labels(service, method, protocol, "ok")
            for a, b in itertools.pairwise(protocols):
                self._fallbacks.labels(service, a, b)
            self._retries.labels(service)
            self._breaker.labels(service).set(BREAKER_VALUE[BreakerState.CLOSED])

    def call_failed(self, err: CallError, service: str, method: str) -> None:
        """A call or stream that failed for its caller: one failed call and one error of its code."""
        self._child(self._failed, service, method, err.code).inc()
        self._errors.count("hub", err.code)

    def _child(self, metric: Counter | Histogram | Gauge, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def attempt(
        self, service: str, method: str, protocol: str, err: CallError | None, seconds: float
    ) -> None:
        outcome = outcome_of(err)
        self._child(self._calls, service, method, protocol, outcome).inc()
        stats = self.stats[service]
        stats.calls[protocol][outcome] += 1
        if err is None:
            self._child(self._latency, service, method, protocol).observe(seconds)
        else:
            stats.last_error = f"{method} over {protocol}: {type(err).__name__}: {err.message}"

    def cancelled(self, service: str, method: str, protocol: str) -> None:
        """A stream its consumer closed before the end."""
        self._child(self._calls, service, method, protocol, "cancelled").inc()
        self.stats[service].calls[protocol]["cancelled"] += 1

    def message(self, service: str, method: str, protocol: str) -> None:
        self._child(self._messages, service, method, protocol).inc()
        self.stats[service].stream_messages[protocol] += 1

    def first_message(self, service: str, method: str, protocol: str, seconds: float) -> None:
        self._child(self._first, service, method, protocol).observe(seconds)

    def fallback(self, service: str, from_protocol: str, to_protocol: str) -> None:
        self._child(self._fallbacks, service, from_protocol, to_protocol).inc()
        self.stats[service].fallbacks[f"{from_protocol}->{to_protocol}"] += 1

    def retry(self, service: str) -> None:
        self._child(self._retries, service).inc()
        self.stats[service].retries += 1

    def retried_call(self, service: str, *, succeeded: bool) -> None:
        """How a call that needed retries (or ran out of them) ended."""
        stats = self.stats[service]
        if succeeded:
            stats.retries_succeeded += 1
        else:
            stats.retries_exhausted += 1

    def breaker(self, service: str, state: BreakerState) -> None:
        self._child(self._breaker, service).set(BREAKER_VALUE[state])
