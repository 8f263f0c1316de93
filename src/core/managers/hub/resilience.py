"""The resilience view of one service: its breaker, its protocols' down marks and counts, its retries.

What ``GET /api/resilience`` and ``sm breakers`` show, built from the hub's live state (the
breaker, the "transport down" marks of ``rounds.py`` and the plain counts of ``metrics.py``).
Times are wall-clock Unix seconds; durations are seconds from now. One service reads::

    {"service": "stt",
     "breaker": {"state": "open", "consecutive_failures": 3, "failure_threshold": 5, "reset_s": 30.0,
                 "last_failure": "Transcribe: ServiceUnavailable: ...", "last_failure_at": 1718000000.5,
                 "opened_at": 1718000000.5, "probe_in_s": 12.4, "refused": 7},
     "protocols": [{"protocol": "grpc", "down": true, "down_for_s": 0.6, "calls": 12, "failures": 4,
                    "outcomes": {"ok": 8, "transport_error": 4}}, ...],
     "retries": {"attempted": 6, "succeeded": 1, "exhausted": 2}}

``refused`` counts calls the open breaker failed at once (``protocol="none"`` in the metrics).
A service the hub never called reads closed, with zero counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.managers.hub.breaker import BreakerState, CircuitBreaker
from core.managers.hub.metrics import NO_PROTOCOL, ServiceStats
from core.managers.hub.rounds import Rounds

#: Outcomes of an attempt that are not a failure of the protocol.
_NOT_FAILURES = frozenset({"ok", "cancelled"})


def breaker_view(
    breaker: CircuitBreaker | None, stats: ServiceStats, *, failure_threshold: int, reset_s: float
) -> dict[str, Any]:
    """The breaker part of the view; ``None`` (never called) reads as a fresh closed breaker."""
    none = stats.calls.get(NO_PROTOCOL)
    refused = none.get("circuit_open", 0) if none is not None else 0
    if breaker is None:
        return {
            "state": BreakerState.CLOSED.value, "consecutive_failures": 0,
            "failure_threshold": failure_threshold, "reset_s": reset_s, "last_failure": None,
            "last_failure_at": None, "opened_at": None, "probe_in_s": None, "refused": refused,
        }
    state = breaker.state
    return {
        "state": state.value,
        "consecutive_failures": breaker.consecutive_failures,
        "failure_threshold": breaker.failure_threshold,
        "reset_s": breaker.reset_s,
        "last_failure": breaker.last_failure or None,
        "last_failure_at": breaker.last_failure_at,
        "opened_at": breaker.opened_at_wall if state is not BreakerState.CLOSED else None,
        "probe_in_s": breaker.probe_in_s(),
        "refused": refused,
    }


def protocol_views(service: str, protocols: Iterable[str], stats: ServiceStats, rounds: Rounds) -> list[dict[str, Any]]:
    """One row per protocol of ``protocols``, then any other protocol the counts mention."""
    names = list(dict.fromkeys([*protocols, *(p for p in stats.calls if p != NO_PROTOCOL)]))
    rows: list[dict[str, Any]] = []
    for name in names:
        counts = stats.calls.get(name)
        outcomes = dict(counts) if counts is not None else {}
        down_for = rounds.down_for(service, name)
        rows.append({
            "protocol": name,
            "down": down_for > 0,
            "down_for_s": round(down_for, 3),
            "calls": sum(outcomes.values()),
            "failures": sum(n for o, n in outcomes.items() if o not in _NOT_FAILURES),
            "outcomes": outcomes,
        })
    return rows


def service_view(
    service: str,
    *,
    breaker: CircuitBreaker | None,
    stats: ServiceStats,
    rounds: Rounds,
    protocols: Iterable[str],
    failure_threshold: int,
    reset_s: float,
) -> dict[str, Any]:
    return {
        "service": service,
        "breaker": breaker_view(breaker, stats, failure_threshold=failure_threshold, reset_s=reset_s),
        "protocols": protocol_views(service, protocols, stats, rounds),
        "retries": {
            "attempted": stats.retries,
            "succeeded": stats.retries_succeeded,
            "exhausted": stats.retries_exhausted,
        },
    }
