"""Is the service answering, and is its model loaded? A grpc.health.v1 probe with a typed result.

The same probe serves readiness (STARTING -> RUNNING once SERVING) and liveness (N failed
probes in a row while RUNNING -> restart). A SIGSTOPped or deadlocked service still accepts
TCP connections in the kernel, so only a per-call deadline catches it: that is TIMEOUT, kept
apart from UNREACHABLE (nothing listening) and NOT_SERVING (alive but not ready, or draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Reconnect quickly: a service that restarts on the same port must be seen within a probe
# period or two, not after grpc's default reconnect backoff (1 s growing to 120 s).
# ``grpc.min_reconnect_backoff_ms`` is, despite its name, gRPC Core's minimum *connect timeout*
# for one attempt; a backoff-sized value would fail every slow handshake (a busy service), so
# it stays well above any probe timeout; each probe is bounded by its own deadline anyway.
# A local subchannel pool keeps a re-created channel from inheriting an old backoff state.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 5_000),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_retries", 0),
)
# Extra time on top of the probe timeout before the local guard gives up on grpc itself.
_GUARD_S = 1.0


class HealthStatus(StrEnum):
    SERVING = "SERVING"  # answered, and the model is loaded
    NOT_SERVING = "NOT_SERVING"  # answered, but not ready (loading, draining, or no health service)
    TIMEOUT = "TIMEOUT"  # accepted the connection but did not answer in time (hung, SIGSTOPped)
    UNREACHABLE = "UNREACHABLE"  # nothing is listening, or the connection failed


@dataclass(frozen=True, slots=True)
class HealthResult:
    status: HealthStatus
    detail: str = ""
    latency_s: float = 0.0

    @property
    def serving(self) -> bool:
        return self.status is HealthStatus.SERVING

    def __str__(self) -> str:
        return f"{self.status.value} ({self.detail})" if self.detail else self.status.value


class HealthProber(Protocol):
    async def probe(self, host: str, port: int, timeout_s: float) -> HealthResult:
        """One health Check of the overall server (service name ""), bounded by ``timeout_s``."""
        ...

    async def forget(self, host: str, port: int) -> None:
        """Drop any connection kept for ``host:port`` (its process is gone)."""
        ...

    async def close(self) -> None: ...


class GrpcHealthProber:
    """Probes over one reused channel per target; channels are created on first use."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, target: str) -> health_pb2_grpc.HealthStub:
        ch = self._channels.get(target)
        if ch is None:
            ch = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            self._channels[target] = ch
        return health_pb2_grpc.HealthStub(ch)

    async def probe(self, host: str, port: int, timeout_s: float) -> HealthResult:
        target = f"{host}:{port}"
        stub = self._stub(target)
        t0 = time.monotonic()
        try:
            resp = await asyncio.wait_for(
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s), timeout_s + _GUARD_S
            )
        except TimeoutError:
            detail = f"no answer within {timeout_s:g}s"
            return HealthResult(HealthStatus.TIMEOUT, detail, time.monotonic() - t0)
        except grpc.aio.AioRpcError as e:
            detail = f"{e.code().name}: {e.details()}"
            return HealthResult(_status_for(e.code()), detail, time.monotonic() - t0)
        latency = time.monotonic() - t0
        if resp.status == health_pb2.HealthCheckResponse.SERVING:
            return HealthResult(HealthStatus.SERVING, "", latency)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return HealthResult(HealthStatus.NOT_SERVING, name, latency)

    async def forget(self, host: str, port: int) -> None:
        ch = self._channels.pop(f"{host}:{port}", None)
        if ch is not None:
            # Closing a broken channel may itself fail; the channel is dropped either way.
            with contextlib.suppress(Exception):
                await ch.close()

    async def close(self) -> None:
        for target in list(self._channels):
            host, _, port = target.rpartition(":")
            await self.forget(host, int(port))


def _status_for(code: grpc.StatusCode) -> HealthStatus:
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return HealthStatus.TIMEOUT
    if code is grpc.StatusCode.UNAVAILABLE:
        return HealthStatus.UNREACHABLE
    # NOT_FOUND (service unknown), UNIMPLEMENTED (no health servicer), UNAUTHENTICATED, ...:
    # something answered, so the process lives, but it is not telling us it serves.
    return HealthStatus.NOT_SERVING
