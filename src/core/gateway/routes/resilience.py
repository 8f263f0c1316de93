"""Resilience controls: ``GET /api/resilience`` and ``POST /api/resilience/breakers/{service}/reset``.

The hub's circuit breakers, "transport down" marks and retry counts, per service and protocol
(``core.managers.hub.resilience`` builds the view), and the operator's override that closes a
breaker at once instead of waiting for its half-open probe (``sm breakers reset SERVICE``).
Known services are the runtime's (the supervisor's and the remote ones, the profile's enabled
services) plus any the hub has state for. These are operator routes; who may call them is the
access layer's business, not this module's.
"""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from core.errors import InvalidArgument, NotFound
from core.gateway.runtime import MainRuntime, runtime_of
from core.gateway.schemas import ErrorBody

router = APIRouter(tags=["resilience"])
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class BreakerView(BaseModel):
    state: Literal["closed", "half_open", "open"]
    consecutive_failures: int = Field(description="Transient call failures since the last success or reset.")
    failure_threshold: int = Field(description="Consecutive failures that open the breaker.")
    reset_s: float = Field(description="How long the breaker stays open before one half-open probe.")
    last_failure: str | None = Field(description="Message of the last failure counted against the service.")
    last_failure_at: float | None = Field(description="Unix time of that failure.")
    opened_at: float | None = Field(description="Unix time the breaker opened; null while closed.")
    probe_in_s: float | None = Field(description="Seconds until a half-open probe is let through; only when open.")
    refused: int = Field(description="Calls the open breaker failed at once, without trying any protocol.")


class ProtocolView(BaseModel):
    protocol: str
    down: bool = Field(description="Marked down: calls skip this protocol for the service for now.")
    down_for_s: float = Field(description="Seconds the down mark still holds (0 when not down).")
    calls: int = Field(description="Attempts over this protocol, every outcome.")
    failures: int = Field(description="Attempts that failed (every outcome but ok and cancelled).")
    outcomes: dict[str, int] = Field(description="Attempts per outcome: ok, transport_error, unavailable, ...")


class RetryView(BaseModel):
    attempted: int = Field(description="Retry rounds started after a round failed transiently.")
    succeeded: int = Field(description="Calls answered in a retry round.")
    exhausted: int = Field(description="Calls that failed in every round (retries spent).")


class ServiceResilience(BaseModel):
    service: str
    breaker: BreakerView
    protocols: list[ProtocolView]
    retries: RetryView


class ResilienceReport(BaseModel):
    protocols: list[str] = Field(description="The hub's fallback order.")
    services: list[ServiceResilience]


class BreakerReset(BaseModel):
    service: str
    previous_state: Literal["closed", "half_open", "open"]
    previous_failures: int
    cleared_down: list[str] = Field(description="Protocols whose down mark the reset cleared.")
    now: ServiceResilience


def known_services(rt: MainRuntime) -> list[str]:
    """The runtime's services (local and remote rows, enabled config) plus the hub's, sorted."""
    names = {str(r["name"]) for r in rt.service_rows()}
    names |= {c.name for c in rt.ctx.settings.enabled_services()}
    names |= set(rt.hub.known_services())
    return sorted(names)


@router.get("/api/resilience", response_model=ResilienceReport)
async def resilience(request: Request) -> ResilienceReport:
    """Per service: the breaker, each protocol's down mark and attempt counts, and retry counts."""
    rt = runtime_of(request)
    views = rt.hub.resilience(known_services(rt))
    return ResilienceReport(protocols=list(rt.hub.protocols), services=[ServiceResilience(**v) for v in views])


@router.post(
    "/api/resilience/breakers/{service}/reset",
    response_model=BreakerReset,
    responses={
        400: {"model": ErrorBody, "description": "The service name is not a valid name."},
        404: {"model": ErrorBody, "description": "No such service."},
    },
)
async def reset_breaker(service: str, request: Request) -> BreakerReset:
    """Close ``service``'s breaker now, zero its failures and clear its protocols' down marks."""
    if not SERVICE_NAME.fullmatch(service):
        raise InvalidArgument(
            f"invalid service name {service[:80]!r}: use 1 to 64 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or digit", service=service[:64],
        )
    rt = runtime_of(request)
    known = known_services(rt)
    if service not in known:
        raise NotFound(
            f"unknown service {service!r}; known services: {', '.join(known) or 'none'} "
            "(see `GET /api/resilience` or `sm breakers`)", service=service,
        )
    return BreakerReset(**rt.hub.reset_breaker(service))
