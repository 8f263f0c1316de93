"""The contract between the runtime and a model service: what a service declares.

A service is any object with the :class:`ModelService` shape. It names its ``role`` (a key of
``core.wire.catalog``), returns one async handler per operation of that role, loads its model
in :meth:`ModelService.load` (the runtime calls it in a worker thread once the servers are up,
so liveness answers during a slow load) and describes what it loaded for the Info call. The
runtime serves Control (Echo, Info), health, auth, metrics and errors for every service.

    async def transcribe(req: TranscribeRequest, call: CallInfo) -> TranscribeResponse: ...
    async def synthesize_stream(req: SynthesizeRequest, call: CallInfo) -> AsyncIterator[SynthesisChunk]:
        yield ...                                    # SERVER_STREAM: an async generator
    async def recognize(reqs: AsyncIterator[StreamingRecognizeRequest], call: CallInfo
                        ) -> AsyncIterator[StreamingRecognizeResponse]:
        async for req in reqs: yield ...             # BIDI_STREAM: requests in, responses out

The runtime checks at startup that each handler has the shape its operation's Kind asks for
(``core.wire.catalog``). Handlers raise ``core.errors`` classes (``InvalidArgument``...) for
requests they refuse; any other exception becomes INTERNAL / 500 and is logged with its
traceback. In a stream, an error raised before the first yield is the call's status; after it,
the error ends the stream (gRPC status, or a final HTTP error frame). When the client cancels or
disconnects, the handler's generator gets ``asyncio.CancelledError`` at its current await (or
``GeneratorExit`` at its current yield): stop the engine's work in ``finally:`` and never
swallow either.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from google.protobuf.message import Message

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from core.context import ServiceContext
    from services.runtime.http_app import HttpKit

Transport = Literal["grpc", "msgpack", "json", "openai", "runpod"]
"""How a call reached the service; ``openai`` is an OpenAI-compatible HTTP route, ``runpod`` a RunPod job."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a handler may want to know about the call it is serving."""

    method: str
    protocol: Transport
    request_id: str
    peer: str = ""
    session_id: str = ""
    """The conversation session the call serves, when main sent one (``x-session-id``)."""
    turn_id: str = ""
    """The conversation turn the call serves, when main sent one (``x-turn-id``)."""
    deadline: float | None = None
    """``time.monotonic()`` instant after which the caller gives up, when it set a deadline."""

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


UnaryHandler = Callable[[Any, CallInfo], Awaitable[Message]]
"""UNARY: ``async def op(request: <Operation.request>, call: CallInfo) -> <Operation.response>``."""

ServerStreamHandler = Callable[[Any, CallInfo], AsyncIterator[Message]]
"""SERVER_STREAM: an async generator ``async def op(request, call) -> AsyncIterator[<response>]``."""

BidiHandler = Callable[[AsyncIterator[Any], CallInfo], AsyncIterator[Message]]
"""BIDI_STREAM: an async generator ``async def op(requests, call) -> AsyncIterator[<response>]``."""

Handler = UnaryHandler | ServerStreamHandler | BidiHandler
"""Any handler; which one an operation needs is its ``core.wire.Kind``."""


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
        """One handler per non-Control operation of the role, keyed by operation name.

        Unary operations take ``async def`` functions; streaming ones async generators."""
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
