"""Streaming through the hub into a real runtime process (``tests.helpers.stream_service``) on 127.0.0.1.

Server streams (Generate, EchoRepeat) and bidi streams (EchoStream) over gRPC, msgpack and
NDJSON; errors before the first message (the call's status) and after it (the stream ends with
the error, never re-sent elsewhere); a consumer that breaks out cancels the handler in the
service; the deadline covers the whole stream; a dead gRPC port falls back to msgpack, with
bidi requests replayed; streams need the token; SIGTERM waits for a stream in flight (and
cancels one that outlives the grace); a handler of the wrong shape stops the service at startup.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.errors import DeadlineExceeded, InvalidArgument, ServiceFailed, TransportError, Unauthenticated
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from services.runtime.lifecycle import EXIT_OK, EXIT_STARTUP
from tests.helpers.service_process import eventually, free_port
from tests.helpers.stream_process import NAME, StreamServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROTOCOLS = ["grpc", "msgpack", "json"]
CONFIG = HubConfig(default_deadline_s=30.0, connect_timeout_s=0.5, max_retries=1, retry_base_s=0.05,
                   retry_cap_s=0.1, breaker_failure_threshold=50, breaker_reset_s=1.0)
INTERVAL_MS = 50


class Resolver:
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def endpoint(self, service: str) -> Endpoint:
        return self.ep


def make_hub(svc: StreamServiceProcess, **changes: Any) -> CommunicationManager:
    ctx = ProcessContext(GlobalContext.create(load_settings()), "stream-it")
    return CommunicationManager(ctx, Resolver(svc.endpoint(**changes)), config=CONFIG)


def sample(hub: CommunicationManager, name: str, **labels: str) -> float:
    return hub._ctx.registry.get_sample_value(name, labels) or 0.0


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Poll a blocking ``pred`` in a thread, so the event loop (and the hub's cleanup) keeps running."""
    await asyncio.to_thread(eventually, pred, timeout, what)


def generate(text: str, **kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **kw}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServiceProcess]:
    proc = StreamServiceProcess(tmp_path_factory.mktemp("stream"), options={"interval_ms": INTERVAL_MS})
    with proc.running(readyz=True):
        yield proc


@pytest.fixture
async def hub(svc: StreamServiceProcess) -> AsyncIterator[CommunicationManager]:
    h = make_hub(svc)
    yield h
    await h.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_stream_yields_chunks_in_order(
    svc: StreamServiceProcess, hub: CommunicationManager, protocol: str
) -> None:
    before = svc.metric("uv_service_stream_messages_total", method="Generate", protocol=protocol, direction="out")
    chunks = [c async for c in hub.stream(NAME, "Generate", generate("the quick brown fox"), protocol=protocol)]
    assert "".join(c.delta for c in chunks) == "the quick brown fox"
    assert [c.finish_reason for c in chunks] == ["", "", "", "", "stop"]
    assert chunks[-1].usage.completion_tokens == 4
    after = svc.metric("uv_service_stream_messages_total", method="Generate", protocol=protocol, direction="out")
    assert after - before == 5
    labels = {"service": NAME, "method": "Generate", "protocol": protocol}
    assert sample(hub, "ultravox_hub_stream_messages_total", **labels) == 5
    assert sample(hub, "ultravox_hub_calls_total", outcome="ok", **labels) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_echo_repeat_and_its_limits(hub: CommunicationManager, protocol: str) -> None:
    payload = os.urandom(4096)
    got = [m.payload async for m in hub.stream(NAME, "EchoRepeat", {"payload": payload, "count": 25},
                                              protocol=protocol)]
    assert got == [payload] * 25
    assert [m async for m in hub.stream(NAME, "EchoRepeat", {"count": 0}, protocol=protocol)] == []
    for bad in (-1, 10_001):
        with pytest.raises(InvalidArgument, match="count must be between 0 and 10000"):
            async for _ in hub.stream(NAME, "EchoRepeat", {"count": bad}, protocol=protocol):
                pass


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bidi_echoes_every_request(hub: CommunicationManager, protocol: str) -> None:
    payloads = [b"", b"\x00\xff" * 10, os.urandom(64 * 1024), b"last"]
    got = [m.payload async for m in hub.stream(NAME, "EchoStream", [{"payload": p} for p in payloads],
                                              protocol=protocol)]
    assert got == payloads


async def test_bidi_over_grpc_is_full_duplex(hub: CommunicationManager) -> None:
    """Each request is sent only after the previous echo came back: no buffering of the whole stream."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[dict[str, bytes]]:
        while (item := await queue.get()) is not None:
            yield {"payload": item}

    stream = hub.stream(NAME, "EchoStream", requests(), protocol="grpc")
    await queue.put(b"0")
    got = []
    async for msg in stream:
        got.append(msg.payload)
        await queue.put(str(len(got)).encode() if len(got) < 5 else None)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


@pytest.mark.parametrize("protocol", [None, *PROTOCOLS])
async def test_refusal_before_the_first_message_is_the_status_and_not_resent(
    svc: StreamServiceProcess, hub: CommunicationManager, protocol: str | None
) -> None:
    with pytest.raises(InvalidArgument, match="first word is 'reject'"):
        async for _ in hub.stream(NAME, "Generate", generate("reject this"), protocol=protocol):
            pass
    tried = protocol or "grpc"
    for p in PROTOCOLS:
        n = sample(hub, "ultravox_hub_calls_total", service=NAME, method="Generate", protocol=p,
                   outcome="invalid_argument")
        assert n == (1 if p == tried else 0)


@pytest.mark.parametrize("protocol", [None, *PROTOCOLS])
async def test_mid_stream_refusal_ends_the_stream_with_the_error(
    hub: CommunicationManager, protocol: str | None
) -> None:
    got = []
    with pytest.raises(InvalidArgument, match="refused after 2 chunks at the word FAIL"):
        async for c in hub.stream(NAME, "Generate", generate("one two FAIL three"), protocol=protocol):
            got.append(c.delta)
    assert got == ["one", " two"]
    assert sum(sample(hub, "ultravox_hub_calls_total", service=NAME, method="Generate", protocol=p,
                      outcome="invalid_argument") for p in PROTOCOLS) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_mid_stream_crash_is_service_failed(hub: CommunicationManager, protocol: str) -> None:
    got = []
    with pytest.raises(ServiceFailed, match="RuntimeError: crashed mid-stream"):
        async for c in hub.stream(NAME, "Generate", generate("alpha CRASH"), protocol=protocol):
            got.append(c.delta)
    assert got == ["alpha"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_breaking_out_cancels_the_handler_in_the_service(
    svc: StreamServiceProcess, hub: CommunicationManager, protocol: str
) -> None:
    def closed() -> float:
        return sum(svc.metric("uv_test_generate_closed_total", how=h) for h in ("CancelledError", "GeneratorExit"))

    def produced() -> float:
        return svc.metric("uv_service_stream_messages_total", method="Generate", protocol=protocol, direction="out")

    closed0, produced0 = closed(), produced()
    cancelled0 = svc.metric("uv_service_calls_total", method="Generate", protocol=protocol, outcome="cancelled")
    received = 0
    async for _ in hub.stream(NAME, "Generate", generate("forever"), protocol=protocol):
        received += 1
        if received == 5:
            break  # the async for closes the generator: aclose() cancels the remote call
    await until(lambda: closed() == closed0 + 1, "the handler to be cancelled")
    assert svc.metric("uv_service_calls_total", method="Generate", protocol=protocol,
                      outcome="cancelled") == cancelled0 + 1
    assert svc.metric("uv_service_calls_in_flight", method="Generate") == 0
    after_cancel = produced() - produced0 - received
    assert after_cancel <= 2, f"the handler produced {after_cancel} chunks after the client cancelled"
    assert sample(hub, "ultravox_hub_calls_total", service=NAME, method="Generate", protocol=protocol,
                  outcome="cancelled") == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_deadline_covers_the_whole_stream(
    svc: StreamServiceProcess, hub: CommunicationManager, protocol: str
) -> None:
    closed0 = svc.metric("uv_test_generate_closed_total", how="CancelledError")
    received = 0
    with pytest.raises(DeadlineExceeded):
        async for _ in hub.stream(NAME, "Generate", generate("forever"), protocol=protocol, deadline_s=1.0):
            received += 1
    assert received >= 1  # it was streaming, then the deadline ended it
    await until(lambda: svc.metric("uv_test_generate_closed_total", how="CancelledError") == closed0 + 1,
                "the handler to be cancelled at the deadline")


async def test_dead_grpc_port_falls_back_to_msgpack_for_streams(
    svc: StreamServiceProcess, service_logs: Callable[[Callable[[], str]], None]
) -> None:
    service_logs(svc.log_text)
    hub = make_hub(svc, grpc_port=free_port())
    try:
        before = svc.metric("uv_service_calls_total", method="Generate", protocol="msgpack", outcome="ok")
        chunks = [c.delta async for c in hub.stream(NAME, "Generate", generate("over http"))]
        assert "".join(chunks) == "over http"
        assert svc.metric("uv_service_calls_total", method="Generate", protocol="msgpack", outcome="ok") == before + 1
        payloads = [b"a", b"b", os.urandom(1000)]
        echoed = [m.payload async for m in hub.stream(NAME, "EchoStream", [{"payload": p} for p in payloads])]
        assert echoed == payloads
        assert sample(hub, "ultravox_hub_fallbacks_total", service=NAME, from_protocol="grpc",
                      to_protocol="msgpack") >= 1
        assert hub.snapshot()[NAME]["calls"]["grpc"].get("transport_error", 0) >= 1
    finally:
        await hub.close()


async def test_grpc_bidi_replays_requests_on_fallback(svc: StreamServiceProcess) -> None:
    """The first requests are pulled by the gRPC attempt, which fails; msgpack gets them again."""
    hub = make_hub(svc, grpc_port=free_port())
    pulled: list[int] = []

    async def requests() -> AsyncIterator[dict[str, bytes]]:
        for i in range(4):
            pulled.append(i)
            yield {"payload": bytes([i])}

    try:
        got = [m.payload async for m in hub.stream(NAME, "EchoStream", requests())]
    finally:
        await hub.close()
    assert got == [bytes([i]) for i in range(4)]
    assert pulled == [0, 1, 2, 3]  # the caller's iterator was read once


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_streams_need_the_token(svc: StreamServiceProcess, protocol: str) -> None:
    hub = make_hub(svc, token="wrong")
    try:
        with pytest.raises(Unauthenticated, match="token is wrong"):
            async for _ in hub.stream(NAME, "EchoRepeat", {"count": 1}, protocol=protocol):
                pass
        with pytest.raises(Unauthenticated):
            async for _ in hub.stream(NAME, "EchoStream", [{"payload": b"x"}], protocol=protocol):
                pass
    finally:
        await hub.close()


@pytest.mark.parametrize("protocol", ["grpc", "msgpack"])
async def test_sigterm_waits_for_a_stream_in_flight(tmp_path: Path, protocol: str) -> None:
    proc = StreamServiceProcess(tmp_path, options={"interval_ms": INTERVAL_MS}).start()
    try:
        proc.wait_ready()
        hub = make_hub(proc)
        words = [f"w{i}" for i in range(20)]
        stream = hub.stream(NAME, "Generate", generate(" ".join(words)), protocol=protocol)
        first = await anext(stream)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        rest = [c.delta async for c in stream]
        assert (first.delta + "".join(rest)).split() == words
        await hub.close()
        assert await asyncio.to_thread(proc.wait_exit) == EXIT_OK
    finally:
        proc.stop()


async def test_a_stream_that_outlives_the_grace_is_cancelled(tmp_path: Path) -> None:
    proc = StreamServiceProcess(tmp_path, options={"interval_ms": INTERVAL_MS}, stop_grace_s=1.0).start()
    try:
        proc.wait_ready()
        hub = make_hub(proc)
        stream = hub.stream(NAME, "Generate", generate("forever"), protocol="msgpack")
        await anext(stream)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        with pytest.raises(TransportError, match="broke after"):
            async for _ in stream:
                pass
        await hub.close()
        assert await asyncio.to_thread(proc.wait_exit) == EXIT_OK
        assert "cancelling calls and streams still in flight" in proc.log_text()
    finally:
        proc.stop()


def test_a_unary_handler_for_a_streaming_op_stops_the_service_at_startup(tmp_path: Path) -> None:
    proc = StreamServiceProcess(tmp_path, options={"broken_shape": True}).start()
    try:
        assert proc.wait_exit(60) == EXIT_STARTUP
        log = proc.log_text()
        assert "Generate is server_stream and needs an async generator function" in log
        assert "its handler is a coroutine function" in log
    finally:
        proc.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_service_killed_mid_stream_is_a_transport_error_not_a_restart(
    tmp_path: Path, protocol: str
) -> None:
    proc = StreamServiceProcess(tmp_path, options={"interval_ms": INTERVAL_MS}).start()
    try:
        proc.wait_ready()
        hub = make_hub(proc)
        # gRPC through the default order (so a fallback would show), the others forced
        stream = hub.stream(NAME, "Generate", generate("forever"), protocol=None if protocol == "grpc" else protocol)
        await anext(stream)
        assert proc.proc is not None
        proc.proc.kill()
        with pytest.raises(TransportError, match=r"broke after \d+ message\(s\); the stream is not restarted"):
            async for _ in stream:
                pass
        for p in PROTOCOLS:
            n = sample(hub, "ultravox_hub_calls_total", service=NAME, method="Generate", protocol=p,
                       outcome="transport_error")
            assert n == (1 if p == protocol else 0)
        await hub.close()
    finally:
        proc.stop()
