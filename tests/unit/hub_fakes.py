"""Fakes for the hub's unit tests: a scripted in-memory Transport, a static resolver, a manual clock."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.errors import NotFound
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager, UnaryCall

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


class FakeTransport:
    """Plays a script of outcomes, one per call (an exception to raise, HANG, a Block), then echoes."""

    def __init__(self, script: Iterable[Any] = ()) -> None:
        self.script: deque[Any] = deque(script)
        self.calls: list[UnaryCall] = []
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

    def __init__(self, *, config: HubConfig | None = None, **scripts: Iterable[Any]) -> None:
        self.ctx = process_context()
        self.clock = ManualClock()
        self.resolver = StaticResolver(endpoint())
        self.t = {p: FakeTransport(scripts.get(p, ())) for p in ("grpc", "msgpack", "json")}
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
