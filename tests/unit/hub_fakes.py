"""Fakes for the hub's unit tests: a scripted in-memory Transport, a static resolver, a manual clock.

Streams have their own script (``streams=``): an exception is raised before the first message;
a :class:`StreamStep` echoes some messages, then raises, hangs or ends; with no step left a
server stream answers EchoRepeat (``count`` copies) and a bidi stream echoes each request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.errors import NotFound
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager, UnaryCall
from core.managers.hub.transports import StreamCall
from core.wire import Kind

HANG = "hang"
"""Script step: never answer (until cancelled by the deadline)."""


class Block:
    """Script step: wait until ``release()`` is called, then echo."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._go = asyncio.Event()

    def release(self) -> None:
        self._go.set()

    async def run(self) -> None:
        self.entered.set()
        await self._go.wait()


@dataclass
class StreamStep:
    """One scripted stream: ``messages`` echoes (requests read first for bidi), then ``then``."""

    messages: int = 0
    read: int = 0
    """Bidi: requests to read before anything else (0: read one per message)."""
    then: BaseException | str | None = None
    """An exception to raise, HANG, or None to end the stream."""
    interval_s: float = 0.0


class FakeTransport:
    """Plays a script of outcomes, one per call (an exception to raise, HANG, a Block), then echoes."""

    def __init__(self, script: Iterable[Any] = (), streams: Iterable[Any] = ()) -> None:
        self.script: deque[Any] = deque(script)
        self.streams: deque[Any] = deque(streams)
        self.calls: list[UnaryCall] = []
        self.stream_calls: list[StreamCall] = []
        self.seen: list[list[bytes]] = []
        """Request payloads each bidi attempt read, in order."""
        self.stream_ends: list[str] = []
        """How each stream generator ended: ``end``, ``raised`` or ``closed`` (aclose/cancel)."""
        self.closed = False

    async def unary(self, call: UnaryCall) -> Message:
        self.calls.append(call)
        step = self.script.popleft() if self.script else None
        if isinstance(step, BaseException):
            raise step
        if step == HANG:
            await asyncio.sleep(3600)
        if isinstance(step, Block):
            await step.run()
        return call.operation.response(payload=getattr(call.request, "payload", b""))

    async def stream(self, call: StreamCall) -> AsyncGenerator[Message, None]:
        self.stream_calls.append(call)
        step = self.streams.popleft() if self.streams else None
        seen: list[bytes] = []
        self.seen.append(seen)
        resp = call.operation.response
        how = "closed"
        try:
            if isinstance(step, BaseException):
                how = "raised"
                raise step
            if step == HANG:
                await asyncio.sleep(3600)
            if step is None:
                if call.operation.kind is Kind.BIDI_STREAM:
                    assert call.requests is not None
                    async for r in call.requests:
                        seen.append(r.payload)
                        yield resp(payload=r.payload)
                else:
                    for _ in range(getattr(call.request, "count", 1)):
                        yield resp(payload=getattr(call.request, "payload", b""))
                how = "end"
                return
            assert isinstance(step, StreamStep)
            if call.requests is not None:
                for _ in range(step.read):
                    seen.append((await anext(call.requests)).payload)
            for i in range(step.messages):
                if i and step.interval_s:
                    await asyncio.sleep(step.interval_s)
                payload = b""
                if call.requests is not None and not step.read:
                    payload = (await anext(call.requests)).payload
                    seen.append(payload)
                yield resp(payload=payload or getattr(call.request, "payload", b""))
            if step.then == HANG:
                await asyncio.sleep(3600)
            if isinstance(step.then, BaseException):
                how = "raised"
                raise step.then
            how = "end"
        finally:
            self.stream_ends.append(how)

    async def close(self) -> None:
        self.closed = True


class StaticResolver:
    """Resolves names from a dict; ``endpoints[name]`` can be swapped to simulate a restart."""

    def __init__(self, *endpoints: Endpoint) -> None:
        self.endpoints = {e.name: e for e in endpoints}
        self.lookups = 0

    def endpoint(self, service: str) -> Endpoint:
        self.lookups += 1
        if service not in self.endpoints:
            raise NotFound(f"unknown service {service!r}")
        return self.endpoints[service]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def endpoint(name: str = "stt", grpc_port: int = 50051, http_port: int = 8001) -> Endpoint:
    return Endpoint(name, "stt", "127.0.0.1", grpc_port, http_port, token="secret-token")


def process_context() -> ProcessContext:
    return ProcessContext(GlobalContext.create(load_settings()), "test")


def fast_config(**over: Any) -> HubConfig:
    """Tiny backoffs so retry tests take milliseconds."""
    base: dict[str, Any] = {
        "default_deadline_s": 5.0,
        "connect_timeout_s": 0.05,
        "max_retries": 2,
        "retry_base_s": 0.001,
        "retry_cap_s": 0.002,
        "breaker_failure_threshold": 3,
        "breaker_reset_s": 10.0,
    }
    return HubConfig(**{**base, **over})


class Rig:
    """A manager wired to three fake transports, a static resolver and a manual clock."""

    def __init__(
        self,
        *,
        config: HubConfig | None = None,
        streams: dict[str, Iterable[Any]] | None = None,
        **scripts: Iterable[Any],
    ) -> None:
        self.ctx = process_context()
        self.clock = ManualClock()
        self.resolver = StaticResolver(endpoint())
        streams = streams or {}
        self.t = {p: FakeTransport(scripts.get(p, ()), streams.get(p, ())) for p in ("grpc", "msgpack", "json")}
        self.hub = CommunicationManager(
            self.ctx, self.resolver, config=config or fast_config(), transports=self.t, clock=self.clock
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.ctx.registry.get_sample_value(name, labels) or 0.0

    def calls(self, protocol: str, outcome: str, service: str = "stt", method: str = "Echo") -> float:
        return self.sample(
            "ultravox_hub_calls_total", service=service, method=method, protocol=protocol, outcome=outcome
        )

    def count(self) -> dict[str, int]:
        return {p: len(t.calls) for p, t in self.t.items()}
