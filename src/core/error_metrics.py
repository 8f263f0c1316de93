"""``ultravox_errors_total{source, type}``: errors counted where main reports them.

Four parts of main report errors, and each counts its own (so one failure can show under two
sources, e.g. a hub call that failed and the REST 503 it became; filter by ``source``):

    gateway       an HTTP error response of the FastAPI app (the error handlers)
    conversation  a turn not run (admission full, bad audio) or an error event sent to a client
    hub           a hub call or stream open that failed, after its fallbacks and retries
    supervisor    a service that exited, failed to start, was killed or is flapping

``type`` is the error code (``INVALID_ARGUMENT``, ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``,
``INTERNAL``...; the supervisor's are its own, see ``SUPERVISOR_TYPES``). Every known
source/type pair starts at 0, so queries return series before the first error.

One counter per registry, shared by the parts that report into it: a registry can hold a
metric family only once, and each process (main, a test) has its own registry.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter

CALL_TYPES = (
    "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION",
    "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL",
)
SUPERVISOR_TYPES = ("EXITED", "STARTUP_FAILED", "KILLED", "FLAPPING")
KNOWN: dict[str, tuple[str, ...]] = {
    "gateway": CALL_TYPES, "conversation": CALL_TYPES, "hub": CALL_TYPES, "supervisor": SUPERVISOR_TYPES,
}

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ErrorMetrics] = weakref.WeakKeyDictionary()


class ErrorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "ultravox_errors_total",
            "Errors reported by main, by the part that reported them (source) and error code (type).",
            ["source", "type"], registry=registry,
        )
        for source, types in KNOWN.items():
            for kind in types:
                self._counter.labels(source, kind)

    def count(self, source: str, kind: str) -> None:
        self._counter.labels(source, kind.upper() or "UNKNOWN").inc()


def error_metrics(registry: CollectorRegistry) -> ErrorMetrics:
    """The one ``ErrorMetrics`` of ``registry`` (created on first use)."""
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = _BY_REGISTRY[registry] = ErrorMetrics(registry)
    return found
