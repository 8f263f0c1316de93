"""The shared runtime every model service runs on: gRPC (primary) and HTTP in one asyncio loop.

A service declares handlers for its role's operations (``core.wire.catalog``) and how to load
its model; the runtime does the rest: generic gRPC handlers and HTTP routes (msgpack or JSON)
for every operation, unary and streaming (HTTP streams as frames, see docs/wire.md), Control
(Echo, Info, EchoRepeat, EchoStream), grpc.health.v1 plus /livez /readyz, /metrics, the
internal token, error mapping, cancellation when a client goes away, JSON logs, graceful drain
on SIGTERM and the parent watchdog::

    class MyService:
        role = "stt"
        def handlers(self): return {"Transcribe": self.transcribe, "StreamingRecognize": self.recognize, ...}
        async def transcribe(self, req, call: CallInfo): ...              # unary: return the response
        async def recognize(self, reqs, call: CallInfo):                  # bidi: an async generator
            async for req in reqs: yield ...
        def load(self): ...                      # blocking, in a worker thread
        def describe(self): return ModelDescription(engine=..., model=..., device=...)
        def http_routes(self, kit: HttpKit): return []
        def close(self): ...

    # services/<role>/__main__.py
    exit_now(service_main("stt", MyService))   # MyService(ctx: ServiceContext)
"""

from services.runtime.api import (
    BidiHandler,
    CallInfo,
    Handler,
    ModelDescription,
    ModelService,
    ServerStreamHandler,
    ServiceFactory,
    Transport,
    UnaryHandler,
)
from services.runtime.entry import exit_now, service_main
from services.runtime.http_app import JSON_TYPE, MSGPACK_TYPES, HttpKit
from services.runtime.lifecycle import EXIT_CRASH, EXIT_OK, EXIT_ORPHANED, EXIT_STARTUP, EXIT_USAGE
from services.runtime.limits import RequestTooLarge

__all__ = [
    "EXIT_CRASH",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_STARTUP",
    "EXIT_USAGE",
    "JSON_TYPE",
    "MSGPACK_TYPES",
    "BidiHandler",
    "CallInfo",
    "Handler",
    "HttpKit",
    "ModelDescription",
    "ModelService",
    "RequestTooLarge",
    "ServerStreamHandler",
    "ServiceFactory",
    "Transport",
    "UnaryHandler",
    "exit_now",
    "service_main",
]
