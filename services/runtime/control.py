"""The Control operations every service serves, whatever its role and even while loading.

``Echo`` and ``Info`` are unary; ``EchoRepeat`` (server stream: ``count`` copies of the payload,
``interval_ms`` apart) and ``EchoStream`` (bidirectional: every request comes straight back)
exist so transports, fallbacks and cancellation can be checked against any running service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from google.protobuf.message import Message

from core.errors import InvalidArgument
from core.wire import CONTROL_OPS
from services.runtime.api import CallInfo, Handler, ModelService
from services.runtime.state import ServiceState

MAX_REPEAT = 10_000
MAX_INTERVAL_MS = 60_000
_ECHO = CONTROL_OPS["Echo"].response


class ControlOps:
    """Handlers for Control, bound to the service they describe."""

    def __init__(
        self, service_name: str, service: ModelService, state: ServiceState, version: Callable[[], str]
    ) -> None:
        self._name = service_name
        self._service = service
        self._state = state
        self._version = version

    def handlers(self) -> dict[str, Handler]:
        return {"Echo": self.echo, "Info": self.info, "EchoRepeat": self.echo_repeat, "EchoStream": self.echo_stream}

    async def echo(self, request: Message, call: CallInfo) -> Message:
        return _ECHO(payload=getattr(request, "payload", b""))

    async def info(self, request: Message, call: CallInfo) -> Message:
        d = self._service.describe()
        return CONTROL_OPS["Info"].response(
            service=self._name, role=self._service.role, engine=d.engine, model=d.model, device=d.device,
            ready=self._state.ready, load_time_s=self._state.load_time_s, version=self._version(),
            details=dict(d.details),
        )

    async def echo_repeat(self, request: Message, call: CallInfo) -> AsyncIterator[Message]:
        count: int = getattr(request, "count", 0)
        interval_ms: int = getattr(request, "interval_ms", 0)
        if not 0 <= count <= MAX_REPEAT:
            raise InvalidArgument(f"EchoRepeat count must be between 0 and {MAX_REPEAT}, got {count}")
        if not 0 <= interval_ms <= MAX_INTERVAL_MS:
            raise InvalidArgument(
                f"EchoRepeat interval_ms must be between 0 and {MAX_INTERVAL_MS}, got {interval_ms}"
            )
        payload: bytes = getattr(request, "payload", b"")
        for i in range(count):
            if i and interval_ms:
                await asyncio.sleep(interval_ms / 1000)
            yield _ECHO(payload=payload)

    async def echo_stream(self, requests: AsyncIterator[Message], call: CallInfo) -> AsyncIterator[Message]:
        async for request in requests:
            yield _ECHO(payload=getattr(request, "payload", b""))
