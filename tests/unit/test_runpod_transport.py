"""The RunPod transport's job state machine and error mapping, over httpx.MockTransport (no network).

The same transport is run against real servers (the SDK's local server and a production-API
double around the real worker) in tests/integration/test_runpod.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.cli.app import _remote_summary
from core.config import load_settings
from core.config.models import RemoteEndpoint
from core.context import GlobalContext, ProcessContext
from core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceFailed,
    ServiceUnavailable,
    TransportError,
    Unauthenticated,
)
from core.gateway.app import install_error_handlers
from core.gateway.routes import control
from core.gateway.runtime import MainRuntime
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from core.managers.hub.transports.base import StreamCall, UnaryCall
from core.managers.hub.transports.runpod import RunpodTransport, job_error
from core.managers.remote import RemoteServices, RemoteState
from core.managers.remote.services import verdict
from core.wire import operation
from tests.unit.test_metrics_main import FakeSupervisor

KEY = "sk-secret-runpod-key-123"
INFO = operation("tts", "Info")
STREAM = operation("tts", "SynthesizeStream")
Handler = Callable[[httpx.Request], httpx.Response]


def ep(local: bool = False, **over: Any) -> Endpoint:
    remote = RemoteEndpoint(kind="runpod", base_url="https://api.example.test/v2", endpoint_id="" if local else "ep1",
                            api_key_env="RUNPOD_API_KEY", local_api=local, poll_interval_s=0.01, **over)
    return Endpoint("tts", "tts", "", 0, 0, "tok", remote=remote, api_key="" if local else KEY)


def info(name: str = "tts") -> dict[str, Any]:
    return {"message": {"service": name, "ready": True}}


class Api:
    """Scripted replies by path; records every request."""

    def __init__(self, routes: dict[str, list[Any]]) -> None:
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        for key, replies in self.routes.items():
            if path.endswith(key) or f"/{key}/" in path:
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                if isinstance(reply, httpx.Response):
                    return reply
                if isinstance(reply, Exception):
                    raise reply
                return httpx.Response(200, json=reply)
        return httpx.Response(404, json={"error": "no route"})

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.seen]


async def unary(api: Api, endpoint: Endpoint | None = None, deadline_s: float = 5.0) -> Any:
    t = RunpodTransport(transport=httpx.MockTransport(api))
    try:
        loop = asyncio.get_running_loop()
        call = UnaryCall(endpoint or ep(), INFO, INFO.request(), loop.time() + deadline_s,
                         (("x-request-id", "r1"), ("x-session-id", "s1")), 1.0)
        return await t.unary(call)
    finally:
        await t.close()


async def test_runsync_then_polls_status_until_completed() -> None:
    api = Api({"runsync": [{"id": "j1", "status": "IN_QUEUE"}],
               "status": [{"id": "j1", "status": "IN_PROGRESS"}, {"id": "j1", "status": "COMPLETED",
                                                                    "output": [info()]}]})
    msg = await unary(api)
    assert msg.ready and msg.service == "tts"
    assert api.paths() == ["POST /v2/ep1/runsync", "GET /v2/ep1/status/j1", "GET /v2/ep1/status/j1"]
    first = api.seen[0]
    assert first.headers["authorization"] == f"Bearer {KEY}" and "wait=" in str(first.url)
    body = json.loads(first.content)
    assert body == {"input": {"op": "Info", "body": {}, "meta": {"request_id": "r1", "session_id": "s1"}}}


@pytest.mark.parametrize(
    ("reply", "cls", "needle"),
    [
        ({"status": "FAILED", "error": json.dumps({"error_type": "<class 'X'>", "error_message":
                                                   "INVALID_ARGUMENT: text is empty"})}, InvalidArgument,
         "text is empty"),
        ({"status": "FAILED", "error": {"code": "NOT_FOUND", "message": "no voice zz"}}, NotFound, "no voice zz"),
        ({"status": "FAILED", "error": "CUDA out of memory\ntraceback..."}, ServiceFailed, "CUDA out of memory"),
        ({"status": "COMPLETED", "output": [{"error": {"code": "INVALID_ARGUMENT", "message": "bad"}}]},
         InvalidArgument, "bad"),
        ({"status": "CANCELLED"}, ServiceUnavailable, "was cancelled"),
        ({"status": "TIMED_OUT"}, DeadlineExceeded, "execution timeout"),
        ({"status": "COMPLETED", "output": [{"weird": 1}]}, ServiceFailed, "this project's worker"),
        ({"status": "COMPLETED", "output": [info(), info()]}, ServiceFailed, "not one"),
    ],
)
async def test_every_job_state_maps_to_an_error_that_says_what_happened(
    reply: dict[str, Any], cls: type[Exception], needle: str
) -> None:
    api = Api({"runsync": [{"id": "j2", **reply}]})
    with pytest.raises(cls, match=needle) as ei:
        await unary(api)
    assert "j2" in str(ei.value) or cls is ServiceFailed


@pytest.mark.parametrize(
    ("status", "cls", "needle"),
    [(401, Unauthenticated, r"\$RUNPOD_API_KEY"), (403, Unauthenticated, "refused"), (404, NotFound, "endpoint id"),
     (429, ResourceExhausted, "throttled"), (502, TransportError, "502"), (400, InvalidArgument, "rejected")],
)
async def test_http_errors_map_and_never_show_the_key(status: int, cls: type[Exception], needle: str) -> None:
    api = Api({"runsync": [httpx.Response(status, text="nope")]})
    with pytest.raises(cls, match=needle) as ei:
        await unary(api)
    assert KEY not in str(ei.value)


async def test_a_refused_connection_is_a_transport_error() -> None:
    api = Api({"runsync": [httpx.ConnectError("refused")]})
    with pytest.raises(TransportError, match="failed"):
        await unary(api)


async def test_a_job_stuck_in_queue_is_cancelled_and_reported_as_a_cold_start() -> None:
    api = Api({"runsync": [{"id": "j3", "status": "IN_QUEUE"}], "status": [{"id": "j3", "status": "IN_QUEUE"}],
               "cancel": [{"id": "j3", "status": "CANCELLED"}]})
    with pytest.raises(ServiceUnavailable, match=r"IN_QUEUE.*cold start.*queue_timeout_s"):
        await unary(api, ep(queue_timeout_s=0.05))
    assert api.paths()[-1] == "POST /v2/ep1/cancel/j3"


async def test_the_deadline_cancels_a_running_job() -> None:
    api = Api({"runsync": [{"id": "j4", "status": "IN_PROGRESS"}], "status": [{"id": "j4", "status": "IN_PROGRESS"}],
               "cancel": [{"id": "j4", "status": "CANCELLED"}]})
    with pytest.raises(DeadlineExceeded, match=r"still running|deadline passed"):
        await unary(api, deadline_s=0.2)
    assert api.paths()[-1] == "POST /v2/ep1/cancel/j4"


async def stream_all(api: Api, endpoint: Endpoint, take: int | None = None) -> list[Any]:
    t = RunpodTransport(transport=httpx.MockTransport(api))
    call = StreamCall(endpoint, STREAM, STREAM.request(text="hi"), None,
                      asyncio.get_running_loop().time() + 5, (("x-request-id", "r"),), 1.0)
    got: list[Any] = []
    gen = t.stream(call)
    try:
        async for m in gen:
            got.append(m)
            if take is not None and len(got) >= take:
                break
    finally:
        await gen.aclose()
        await t.close()
    return got


def chunk(i: int) -> dict[str, Any]:
    return {"output": {"message": {"index": i, "audio": "AAAA"}}}


async def test_stream_reads_incremental_chunks_until_completed() -> None:
    api = Api({"/run": [{"id": "s1", "status": "IN_QUEUE"}],
               "stream": [{"status": "IN_QUEUE", "stream": []}, {"status": "IN_PROGRESS", "stream": [chunk(0)]},
                          {"status": "COMPLETED", "stream": [chunk(1), chunk(2)]}]})
    got = await stream_all(api, ep())
    assert [m.index for m in got] == [0, 1, 2]
    assert api.paths()[0] == "POST /v2/ep1/run" and set(api.paths()[1:]) == {"GET /v2/ep1/stream/s1"}


async def test_closing_a_stream_early_cancels_its_job() -> None:
    api = Api({"/run": [{"id": "s2", "status": "IN_QUEUE"}],
               "stream": [{"status": "IN_PROGRESS", "stream": [chunk(0)]}], "cancel": [{"status": "CANCELLED"}]})
    got = await stream_all(api, ep(), take=1)
    assert len(got) == 1 and api.paths()[-1] == "POST /v2/ep1/cancel/s2"


async def test_a_failed_stream_raises_the_workers_error() -> None:
    api = Api({"/run": [{"id": "s3", "status": "IN_QUEUE"}],
               "stream": [{"status": "FAILED", "stream": [], "error": {"code": "INVALID_ARGUMENT", "message": "no"}}],
               "cancel": [{"status": "CANCELLED"}]})
    with pytest.raises(InvalidArgument, match="no"):
        await stream_all(api, ep())


async def test_the_sdk_local_server_gets_post_everywhere_no_prefix_and_no_cancel() -> None:
    api = Api({"/run": [{"id": "l1", "status": "IN_PROGRESS"}],
               "stream": [{"id": "l1", "status": "COMPLETED", "stream": [chunk(0), chunk(1)]}]})
    got = await stream_all(api, ep(local=True), take=1)
    assert len(got) == 1
    assert api.paths() == ["POST /v2/run", "POST /v2/stream/l1"]  # no cancel: the local server has none
    assert "authorization" not in api.seen[0].headers


def test_job_error_reads_the_sdks_traceback_text() -> None:
    e = job_error(ep(), "j", "handler: RESOURCE_EXHAUSTED: queue full \ntraceback: ...")
    assert isinstance(e, ResourceExhausted) and "queue full" in e.message


# ---- remote services and the hub's protocol choice ---------------------------------------------------

def runpod_ctx(**env: str) -> ProcessContext:
    settings = load_settings(profile="runpod", env=env)
    return ProcessContext(GlobalContext.create(settings), "main")


def test_health_verdicts() -> None:
    assert verdict({"workers": {"idle": 1, "running": 0}, "jobs": {"inQueue": 0}})[0] is RemoteState.READY
    state, workers, jobs = verdict({"workers": {"idle": 0, "running": 0, "initializing": 1}, "jobs": {"inQueue": 3}})
    assert state is RemoteState.COLD and workers["initializing"] == 1 and jobs["inQueue"] == 3


async def test_a_missing_key_is_remote_down_with_what_to_do() -> None:
    remote = RemoteServices(runpod_ctx(UV_TTS_ENDPOINT_ID="abc"), env={})
    assert "tts" in remote and "stt" not in remote and remote.endpoint("tts").remote.endpoint_id == "abc"  # type: ignore[union-attr]
    st = await remote.probe("tts")
    assert st.state is RemoteState.DOWN and "$RUNPOD_API_KEY is not set" in st.last_error
    assert st.to_dict()["endpoint"] == "https://api.runpod.ai/v2/abc"
    await remote.close()


async def test_the_hub_reaches_a_runpod_service_over_runpod_only() -> None:
    ctx = runpod_ctx()
    remote = RemoteServices(ctx, env={"RUNPOD_API_KEY": KEY})

    class Resolver:
        def endpoint(self, name: str) -> Endpoint:
            return remote.endpoint(name)

    async with CommunicationManager(ctx, Resolver()) as hub:
        with pytest.raises(InvalidArgument, match="over protocol 'runpod' only"):
            await hub.call("tts", "Info", {}, protocol="grpc")
        assert hub.endpoint("tts").api_key == KEY and KEY not in repr(hub.endpoint("tts"))
    await remote.close()


async def test_a_down_endpoint_shows_in_health_services_metrics_and_sm(tmp_path: Path) -> None:
    """The control API as `sm` reads it, with the runpod profile's TTS endpoint down (no key)."""
    ctx = runpod_ctx(UV_TTS_ENDPOINT_ID="abc")
    remote = RemoteServices(ctx, env={})
    await remote.probe("tts")
    rt = MainRuntime(ctx=ctx, supervisor=FakeSupervisor([]), hub=None, remote=remote)  # type: ignore[arg-type]
    rt.booted = True
    control.install_metrics(rt)
    app = FastAPI()
    app.include_router(control.router)
    app.state.runtime = rt
    install_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        health = await c.get("/health")
        rows = (await c.get("/services")).json()
        stop = await c.post("/services/tts/stop")
        logs = await c.get("/services/tts/logs")
        metrics = (await c.get("/metrics")).text
    await rt.proxy_client.aclose()
    await remote.close()
    assert health.status_code == 503
    assert "$RUNPOD_API_KEY is not set" in health.json()["remote_errors"]["tts"]
    (row,) = rows
    assert row["state"] == "REMOTE_DOWN" and row["endpoint"] == "https://api.runpod.ai/v2/abc" and row["remote"]
    assert stop.status_code == 400 and "RunPod starts and stops its workers" in stop.text
    assert logs.status_code == 400 and "RunPod console" in logs.text
    series = 'ultravox_remote_state{endpoint="https://api.runpod.ai/v2/abc",service="tts",state="REMOTE_DOWN"} 1.0'
    assert series in metrics
    line = _remote_summary(row)
    assert "runpod https://api.runpod.ai/v2/abc" in line and "RUNPOD_API_KEY" in line
