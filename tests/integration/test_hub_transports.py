"""The hub's three real transports against real in-process servers on 127.0.0.1.

A grpc.aio server and a uvicorn HTTP app (scripts/bench/_echo_servers.py) honour the service
wire contract for Control/Echo. Covers: binary round trips over gRPC, msgpack and JSON; falling
back to msgpack when the gRPC port is closed or never answers; a rejection that is not re-sent
over another protocol; an UNAVAILABLE answer that is retried but not re-sent; a service
restarted on the same port, or moved to new ports, is reached again.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.errors import InvalidArgument, ServiceUnavailable, Unauthenticated
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from scripts.bench._echo_servers import HOST, Counts, EchoGrpcServer, EchoHttpServer, free_port

pytestmark = pytest.mark.timeout(60)

TOKEN = "integration-token"
CONFIG = HubConfig(
    default_deadline_s=10.0,
    connect_timeout_s=0.5,
    max_retries=2,
    retry_base_s=0.05,
    retry_cap_s=0.2,
    breaker_failure_threshold=50,
    breaker_reset_s=1.0,
)


class Resolver:
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def endpoint(self, service: str) -> Endpoint:
        return self.ep


@dataclass
class Stack:
    grpc: EchoGrpcServer
    http: EchoHttpServer
    counts: Counts
    resolver: Resolver
    hub: CommunicationManager
    ctx: ProcessContext

    def sample(self, name: str, **labels: str) -> float:
        return self.ctx.registry.get_sample_value(name, labels) or 0.0


async def _start_servers(
    counts: Counts, grpc_port: int = 0, http_port: int = 0
) -> tuple[EchoGrpcServer, EchoHttpServer]:
    g, h = EchoGrpcServer(TOKEN, counts, grpc_port), EchoHttpServer(TOKEN, counts, http_port)
    await g.start()
    await h.start()
    return g, h


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    counts = Counts()
    g, h = await _start_servers(counts)
    ctx = ProcessContext(GlobalContext.create(load_settings()), "hub-it")
    resolver = Resolver(Endpoint("echo", "stt", HOST, g.port, h.port, TOKEN))
    hub = CommunicationManager(ctx, resolver, config=CONFIG)
    s = Stack(g, h, counts, resolver, hub, ctx)
    yield s
    await hub.close()
    await s.grpc.stop()
    await s.http.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that completes TCP handshakes (kernel backlog) but whose owner never reads: a hung server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("protocol", ["grpc", "msgpack", "json"])
async def test_binary_payloads_round_trip_over_each_protocol(stack: Stack, protocol: str) -> None:
    for size in (0, 100, 32 * 1024, 240 * 1024):
        payload = os.urandom(size)
        resp = await stack.hub.call("echo", "Echo", {"payload": payload}, protocol=protocol)
        assert resp.payload == payload
    assert stack.counts.by_protocol[protocol] == 4
    assert sum(stack.counts.by_protocol.values()) == 4
    labels = {"service": "echo", "method": "Echo", "protocol": protocol}
    assert stack.sample("ultravox_hub_calls_total", outcome="ok", **labels) == 4


@pytest.mark.parametrize("protocol", ["grpc", "msgpack", "json"])
async def test_token_and_request_id_reach_the_server(stack: Stack, protocol: str) -> None:
    await stack.hub.call("echo", "Echo", protocol=protocol, metadata={"x-request-id": "req-42"})
    assert stack.counts.last_metadata["x-request-id"] == "req-42"
    assert stack.counts.last_metadata["x-internal-token"] == TOKEN


async def test_default_order_uses_grpc(stack: Stack) -> None:
    await stack.hub.call("echo", "Echo", {"payload": b"hi"})
    assert stack.counts.by_protocol == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_closed_grpc_port_falls_back_to_msgpack(stack: Stack) -> None:
    stack.resolver.ep = dataclasses.replace(stack.resolver.ep, grpc_port=free_port())
    payload = os.urandom(32 * 1024)
    resp = await stack.hub.call("echo", "Echo", {"payload": payload}, deadline_s=5.0)
    assert resp.payload == payload
    assert stack.counts.by_protocol == {"grpc": 0, "msgpack": 1, "json": 0}
    fallbacks = stack.sample(
        "ultravox_hub_fallbacks_total", service="echo", from_protocol="grpc", to_protocol="msgpack"
    )
    assert fallbacks == 1
    assert stack.hub.snapshot()["echo"]["calls"]["grpc"] == {"transport_error": 1}


async def test_grpc_port_that_never_answers_falls_back_within_the_deadline(
    stack: Stack, silent_port: int
) -> None:
    stack.resolver.ep = dataclasses.replace(stack.resolver.ep, grpc_port=silent_port)
    resp = await stack.hub.call("echo", "Echo", {"payload": b"x"}, deadline_s=5.0)
    assert resp.payload == b"x"
    assert stack.counts.by_protocol["msgpack"] == 1
    assert stack.hub.snapshot()["echo"]["calls"]["grpc"] == {"transport_error": 1}


async def test_invalid_argument_is_not_resent_over_another_protocol(stack: Stack) -> None:
    with pytest.raises(InvalidArgument, match="test hook"):
        await stack.hub.call("echo", "Echo", {"payload": b"reject: please"})
    assert stack.counts.by_protocol == {"grpc": 1, "msgpack": 0, "json": 0}
    assert stack.sample("ultravox_hub_retries_total", service="echo") == 0


@pytest.mark.parametrize("protocol", ["msgpack", "json"])
async def test_http_rejection_is_not_resent(stack: Stack, protocol: str) -> None:
    with pytest.raises(InvalidArgument, match="test hook"):
        await stack.hub.call("echo", "Echo", {"payload": b"reject: please"}, protocol=protocol)
    assert stack.counts.by_protocol[protocol] == 1
    assert sum(stack.counts.by_protocol.values()) == 1


async def test_wrong_token_is_unauthenticated_without_fallback(stack: Stack) -> None:
    stack.resolver.ep = dataclasses.replace(stack.resolver.ep, token="wrong")
    with pytest.raises(Unauthenticated):
        await stack.hub.call("echo", "Echo")
    assert stack.counts.by_protocol == {"grpc": 1, "msgpack": 0, "json": 0}


async def test_unavailable_answers_are_retried_but_never_sent_as_json(stack: Stack) -> None:
    with pytest.raises(ServiceUnavailable):
        await stack.hub.call("echo", "Echo", {"payload": b"unavailable: draining"})
    # round 1: gRPC UNAVAILABLE (transport) -> msgpack 503 (stop); rounds 2-3: gRPC skipped -> msgpack 503
    assert stack.counts.by_protocol == {"grpc": 1, "msgpack": 3, "json": 0}
    assert stack.sample("ultravox_hub_retries_total", service="echo") == 2


async def test_server_restarted_on_the_same_port_is_reached_again(stack: Stack) -> None:
    for protocol in ("grpc", "msgpack", "json"):
        await stack.hub.call("echo", "Echo", {"payload": b"before"}, protocol=protocol)
    grpc_port, http_port = stack.grpc.port, stack.http.port
    await stack.grpc.stop()
    await stack.http.stop()

    with pytest.raises(ServiceUnavailable):
        await stack.hub.call("echo", "Echo", {"payload": b"down"}, deadline_s=5.0)

    stack.grpc, stack.http = await _start_servers(stack.counts, grpc_port, http_port)
    assert (stack.grpc.port, stack.http.port) == (grpc_port, http_port)
    for protocol in ("grpc", "msgpack", "json"):
        resp = await stack.hub.call("echo", "Echo", {"payload": b"after"}, protocol=protocol, deadline_s=5.0)
        assert resp.payload == b"after"
    assert stack.counts.by_protocol == {"grpc": 2, "msgpack": 2, "json": 2}


async def test_service_moved_to_new_ports_is_reached(stack: Stack) -> None:
    await stack.hub.call("echo", "Echo", protocol="grpc")
    await stack.hub.call("echo", "Echo", protocol="msgpack")
    moved = Counts()
    g2, h2 = await _start_servers(moved)
    try:
        old_g, old_h = stack.grpc, stack.http
        stack.resolver.ep = dataclasses.replace(stack.resolver.ep, grpc_port=g2.port, http_port=h2.port)
        await old_g.stop()
        await old_h.stop()
        for protocol in ("grpc", "msgpack", "json"):
            await stack.hub.call("echo", "Echo", protocol=protocol)
        assert moved.by_protocol == {"grpc": 1, "msgpack": 1, "json": 1}
    finally:
        stack.grpc, stack.http = g2, h2
