"""The contract between the runtime and a model service: what a service declares.

A service is any object with the :class:`ModelService` shape. It names its ``role`` (a key of
``core.wire.catalog``), returns one async handler per operation of that role, loads its model
in :meth:`ModelService.load` (the runtime calls it in a worker thread once the servers are up,
so liveness answers during a slow load) and describes what it loaded for the Info call. The
runtime serves Control (Echo, Info), health, auth, metrics and errors for every service.

    async def transcribe(req: TranscribeRequest, call: CallInfo) -> TranscribeResponse: ...

Handlers raise ``core.errors`` classes (``InvalidArgument``...) for requests they refuse; any
other exception becomes INTERNAL / 500 and is logged with its traceback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from google.protobuf.message import Message

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from core.context import ServiceContext
    from services.runtime.http_app import HttpKit

Transport = Literal["grpc", "msgpack", "json", "openai"]
"""How a call reached the service; ``openai`` is an OpenAI-compatible HTTP route."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a handler may want to know about the call it is serving."""

    method: str
    protocol: Transport
    request_id: str
    peer: str = ""
    deadline: float | None = None
    """``time.monotonic()`` instant after which the caller gives up, when it set a deadline."""

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


Handler = Callable[[Any, CallInfo], Awaitable[Message]]
"""``async def op(request: <Operation.request>, call: CallInfo) -> <Operation.response>``."""


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What the Info call and /readyz report about the engine and model."""

    engine: str
    model: str
    device: str
    details: Mapping[str, str] = field(default_factory=dict)


class ModelService(Protocol):
    """What a model service gives the runtime (see the module docstring)."""

    @property
    def role(self) -> str:
        """Which catalog role it serves: ``stt``, ``tts`` or ``llm``."""
        ...

    def handlers(self) -> Mapping[str, Handler]:
        """One handler per non-Control operation of the role, keyed by operation name."""
        ...

    def load(self) -> None:
        """Load the model. Blocking; runs in a worker thread. Raise to make the process exit."""
        ...

    def describe(self) -> ModelDescription:
        """Engine, model and device, before or after loading."""
        ...

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        """Extra HTTP routes (e.g. OpenAI-compatible ones); ``kit`` authenticates and dispatches."""
        ...

    def close(self) -> None:
        """Release threads and the model after the servers have drained."""
        ...


ServiceFactory = Callable[["ServiceContext"], ModelService]
"""Builds the service from its context; called once per process, before the servers start."""
