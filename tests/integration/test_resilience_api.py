"""Resilience controls against a real failure: a real service subprocess goes away, the breaker opens.

The service is ``tests.helpers.stream_service`` launched the way main launches one (its own
process, free loopback ports, the internal token); the hub and its real transports call it; the
real ``/api/resilience`` routes report on the hub. Killing the service makes every transport
fail (connection refused) until the breaker opens, which ``GET /api/resilience`` shows with the
last failure and the exhausted retries. A restarted service (new ports, as a port-0 restart
gets) is still refused while the breaker is open; ``POST .../reset`` closes it at once and the
next call reaches the new instance.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.errors import CircuitOpen, ServiceUnavailable
from core.gateway.app import install_error_handlers
from core.gateway.routes import resilience
from core.gateway.runtime import MainRuntime
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from core.managers.remote import RemoteServices
from tests.helpers.stream_process import NAME, StreamServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
THRESHOLD = 3
CONFIG = HubConfig(default_deadline_s=10.0, connect_timeout_s=0.5, max_retries=1, retry_base_s=0.02,
                   retry_cap_s=0.05, breaker_failure_threshold=THRESHOLD, breaker_reset_s=60.0)


class Resolver:
    """Where the service is now; a restart points it at the new instance, as the supervisor would."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def endpoint(self, service: str) -> Endpoint:
        return self.ep


class NoProcesses:
    def statuses(self) -> list[Any]:
        return []


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def svc(workdir: Path) -> Iterator[StreamServiceProcess]:
    proc = StreamServiceProcess(workdir / "first", stop_grace_s=2.0)
    with proc.running(readyz=True):
        yield proc


@pytest.fixture
async def api(svc: StreamServiceProcess) -> AsyncIterator[tuple[httpx.AsyncClient, CommunicationManager, Resolver]]:
    ctx = ProcessContext(GlobalContext.create(load_settings()), "resilience-it")
    resolver = Resolver(svc.endpoint())
    hub = CommunicationManager(ctx, resolver, config=CONFIG)
    rt = MainRuntime(ctx=ctx, supervisor=NoProcesses(), hub=hub, remote=RemoteServices(ctx))  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(resilience.router)
    install_error_handlers(app)
    app.state.runtime = rt
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://main") as client:
        yield client, hub, resolver
    await hub.close()
    await rt.proxy_client.aclose()


async def _service(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/resilience")
    assert r.status_code == 200, r.text
    return next(s for s in r.json()["services"] if s["service"] == NAME)


async def test_killed_service_opens_the_breaker_and_a_reset_closes_it(
    api: tuple[httpx.AsyncClient, CommunicationManager, Resolver], svc: StreamServiceProcess, workdir: Path
) -> None:
    client, hub, resolver = api
    assert (await hub.call(NAME, "ListModels")).models  # healthy: one model listed
    assert (await _service(client))["breaker"]["state"] == "closed"

    svc.stop(signal.SIGKILL)  # gone without a goodbye: every port refuses
    for _ in range(THRESHOLD):
        with pytest.raises(ServiceUnavailable) as info:
            await hub.call(NAME, "ListModels")
        assert not isinstance(info.value, CircuitOpen)
    with pytest.raises(CircuitOpen):
        await hub.call(NAME, "ListModels")

    down = await _service(client)
    b = down["breaker"]
    assert b["state"] == "open" and b["consecutive_failures"] == THRESHOLD and b["refused"] == 1
    assert b["last_failure"].startswith("ListModels: ServiceUnavailable: ") and b["last_failure_at"] is not None
    assert b["opened_at"] is not None and 0 < b["probe_in_s"] <= 60.0
    assert down["retries"] == {"attempted": THRESHOLD, "succeeded": 0, "exhausted": THRESHOLD}
    rows = {p["protocol"]: p for p in down["protocols"]}
    assert rows["grpc"]["outcomes"]["ok"] == 1 and rows["grpc"]["failures"] >= THRESHOLD
    assert any(p["down"] for p in rows.values())

    with StreamServiceProcess(workdir / "second", stop_grace_s=2.0).running(readyz=True) as again:
        resolver.ep = again.endpoint()
        with pytest.raises(CircuitOpen):  # back up, but the breaker waits for its probe (60 s)
            await hub.call(NAME, "ListModels")
        r = await client.post(f"/api/resilience/breakers/{NAME}/reset")
        assert r.status_code == 200, r.text
        reset = r.json()
        assert reset["previous_state"] == "open" and reset["previous_failures"] == THRESHOLD
        assert reset["now"]["breaker"]["state"] == "closed"
        assert not any(p["down"] for p in reset["now"]["protocols"])

        assert (await hub.call(NAME, "ListModels")).models  # reaches the new instance at once
        up = await _service(client)
        assert up["breaker"]["state"] == "closed" and up["breaker"]["consecutive_failures"] == 0
        assert up["breaker"]["last_failure"] == b["last_failure"]  # kept as history
        assert {p["protocol"]: p for p in up["protocols"]}["grpc"]["outcomes"]["ok"] == 2

    missing = await client.post("/api/resilience/breakers/not-a-service/reset")
    assert missing.status_code == 404 and NAME in missing.json()["error"]["message"]
