"""`sm breakers` and `sm breakers reset` against the real resilience routes served by uvicorn on 127.0.0.1.

The hub behind the routes is the unit tests' rig (fake transports, manual clock), so a breaker
can be opened on demand; the routes, the HTTP server, the ControlClient and the typer commands
are the real ones. Also covers what the CLI relies on: 400 for a bad name, 404 for an unknown
one (with the known services), and both routes' response models in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from core.cli.app import app as sm_app
from core.errors import ServiceUnavailable, TransportError
from core.gateway.app import install_error_handlers
from core.gateway.routes import resilience
from core.gateway.runtime import MainRuntime
from core.managers.remote import RemoteServices
from tests.unit.hub_fakes import Rig, fast_config

pytestmark = pytest.mark.timeout(60)


class NoProcesses:
    """The supervisor as the routes see it: no local process rows."""

    def statuses(self) -> list[Any]:
        return []


@dataclass
class Served:
    rig: Rig
    url: str

    async def sm(self, *args: str) -> Result:
        """Run ``sm --url URL ARGS`` in a thread, so this loop keeps serving the request."""
        return await asyncio.to_thread(CliRunner().invoke, sm_app, ["--url", self.url, *args])


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    rig = Rig(config=fast_config(max_retries=1), grpc=[TransportError("refused")] * 6,
              msgpack=[TransportError("refused")] * 6, json=[TransportError("refused")] * 6)
    rt = MainRuntime(ctx=rig.ctx, supervisor=NoProcesses(), hub=rig.hub,  # type: ignore[arg-type]
                     remote=RemoteServices(rig.ctx))
    api = FastAPI()
    api.include_router(resilience.router)
    install_error_handlers(api)
    api.state.runtime = rt
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # log_config=None: leave the process's logging alone (uvicorn's default config would detach its
    # loggers from the root handler that later tests read)
    server = uvicorn.Server(uvicorn.Config(api, lifespan="off", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "uvicorn exited before it started"
        await asyncio.sleep(0.005)
    yield Served(rig, f"http://127.0.0.1:{sock.getsockname()[1]}")
    server.should_exit = True
    await task
    sock.close()
    await rt.proxy_client.aclose()


async def _open_stt_breaker(rig: Rig) -> None:
    for _ in range(3):  # threshold 3; each call is 2 rounds over 3 protocols
        with pytest.raises(ServiceUnavailable):
            await rig.hub.call("stt", "Echo")


async def test_breakers_table_shows_open_breaker_protocols_and_retries(served: Served) -> None:
    await _open_stt_breaker(served.rig)
    r = await served.sm("breakers")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:5] == ["SERVICE", "PROTOCOL", "STATE", "FAILURES", "RETRIES"]
    i = next(n for n, line in enumerate(lines) if line.startswith("stt "))
    row = lines[i]
    assert "open (probe in 10s)" in row and " 3 " in row and "3 (0 ok, 3 spent)" in row
    assert "ago: Echo: ServiceUnavailable:" in row
    protocols = [line.split() for line in lines[i + 1:i + 4]]
    assert [p[0] for p in protocols] == ["grpc", "msgpack", "json"]
    assert all(p[1] == "down" and p[-1] == "6/6" for p in protocols)
    others = [line.split()[0] for line in lines[1:] if line and not line.startswith(" ")]
    assert others == sorted(others) and len(others) > 1  # every enabled service, called or not


async def test_breakers_json_is_the_api_report(served: Served) -> None:
    await _open_stt_breaker(served.rig)
    r = await served.sm("--json", "breakers")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["protocols"] == ["grpc", "msgpack", "json"]
    stt = next(s for s in report["services"] if s["service"] == "stt")
    assert stt["breaker"]["state"] == "open" and stt["breaker"]["consecutive_failures"] == 3
    assert stt["retries"] == {"attempted": 3, "succeeded": 0, "exhausted": 3}
    assert stt["protocols"][0]["outcomes"] == {"transport_error": 6}


async def test_reset_closes_the_breaker_and_the_next_call_goes_through(served: Served) -> None:
    await _open_stt_breaker(served.rig)
    r = await served.sm("breakers", "reset", "stt")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("stt: breaker closed (was open after 3 consecutive failure(s); down marks cleared: ")
    assert served.rig.hub.breaker_state("stt") == "closed"
    await served.rig.hub.call("stt", "Echo")  # the fakes' scripts are spent: it answers
    again = await served.sm("--json", "breakers", "reset", "stt")
    body = json.loads(again.output)
    assert body["previous_state"] == "closed" and body["now"]["breaker"]["state"] == "closed"


async def test_reset_of_an_unknown_or_bad_name_fails_with_the_api_error(served: Served) -> None:
    r = await served.sm("breakers", "reset", "nosuch")
    assert r.exit_code == 1 and r.exception is not None
    assert "NOT_FOUND (404)" in str(r.exception) and "'nosuch'" in str(r.exception)
    assert "GET /api/resilience" in str(r.exception) and "stt" in str(r.exception)
    async with httpx.AsyncClient(base_url=served.url) as c:
        bad = await c.post("/api/resilience/breakers/Bad.Name/reset")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"
        assert "invalid service name 'Bad.Name'" in bad.json()["error"]["message"]
        long = await c.post(f"/api/resilience/breakers/{'a' * 65}/reset")
        assert long.status_code == 400


async def test_routes_have_response_models_in_the_openapi_schema(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as c:
        schema = (await c.get("/openapi.json")).json()
    get = schema["paths"]["/api/resilience"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert get == {"$ref": "#/components/schemas/ResilienceReport"}
    post = schema["paths"]["/api/resilience/breakers/{service}/reset"]["post"]["responses"]
    assert post["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BreakerReset"}
    assert {"400", "404"} <= set(post)
    breaker = schema["components"]["schemas"]["BreakerView"]["properties"]
    assert breaker["state"]["enum"] == ["closed", "half_open", "open"]
