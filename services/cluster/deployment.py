"""The Ray Serve deployment of one model role: the SAME service code as the local services.

:class:`ModelDeployment` is built with a role and the launch spec of that role's service (the
JSON ``ServiceContext.launch_env`` makes: settings, paths, token, service name). Its constructor
builds the role's ``ModelService`` and ``Dispatcher`` exactly like the RunPod worker does
(``services.runtime.runpod_worker.Worker``) and loads the model, once per replica.

Two ingresses reach the dispatcher:

* **gRPC** (Serve's gRPC proxy, our servicers registered): one method per RPC, named like it
  (``Transcribe``, ``SynthesizeStream``...), unary ones return the response, server-streaming
  ones are async generators. The caller sends the ``application`` metadata plus the usual
  ``x-internal-token`` (and ``x-request-id``, ``x-session-id``, ``x-turn-id``). A refused call
  sets the ``CallError``'s code and message on Serve's gRPC context and raises, so the client
  gets INVALID_ARGUMENT (NOT_FOUND, UNAUTHENTICATED...) with our message, never INTERNAL, and
  the replica keeps serving. Bidirectional operations (StreamingRecognize, EchoStream) are not
  exposed: the live STT stream stays a local service.
* **HTTP** (Serve's HTTP proxy, ``/<application>`` prefix): the services' own ASGI app
  (``services.runtime.http_app.build_http_app``) served as the replica's ingress, so paths,
  msgpack/JSON bodies, NDJSON/msgpack frame streams and the OpenAI-compatible routes are those
  of a local service.

Ray is imported only by ``serve_app.py``; this class is plain Python, wrapped there with
``serve.ingress`` and ``serve.deployment``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from google.protobuf.message import Message

from core.context import LAUNCH_SPEC_ENV, ServiceContext
from core.errors import CallError, grpc_status
from core.logs import MAX_ID_CHARS, clean_id, new_request_id, register_secret
from services.runtime.api import CallInfo
from services.runtime.http_app import HttpKit, build_http_app
from services.runtime.logs import configure_logging
from services.runtime.runpod_worker import Worker, _factories

log = logging.getLogger("ultravox.cluster.deployment")


class CallRefused(Exception):
    """Raised after the gRPC context got the CallError's code and message: Serve then answers with
    that status (``gRPCStatusError``) instead of INTERNAL; the replica stays up."""


def role_context(role: str, launch_spec: str) -> ServiceContext:
    """The role's service context from the launch spec the agent passed (engine ray-serve, which
    would call the cluster from inside it, becomes the local engine)."""
    ctx = ServiceContext.from_launch_env({LAUNCH_SPEC_ENV: launch_spec})
    if ctx.config.role != role:
        raise ValueError(f"service {ctx.config.name!r} has role {ctx.config.role!r}, not {role!r}")
    if role == "stt" and ctx.config.engine == "ray-serve":
        ctx.config = ctx.config.model_copy(update={"engine": "faster-whisper"})
    return ctx


class ModelDeployment:
    """One replica of a role's deployment: a loaded service behind gRPC methods and HTTP."""

    def __init__(self, role: str, launch_spec: str, log_level: str = "INFO") -> None:
        ctx = role_context(role, launch_spec)
        for key, value in ctx.config.env.items():  # what main sets when it spawns the local service
            os.environ.setdefault(key, value)
        register_secret(ctx.token)
        configure_logging(ctx.config.name, log_level)
        self.role, self.name = role, ctx.config.name
        self.worker = Worker(ctx, _factories()[role]()(ctx))
        self.dispatcher = self.worker.dispatcher
        seconds = self.worker.load()
        log.info("replica ready", extra={"service": self.name, "role": role, "load_s": round(seconds, 3),
                                         "pid": os.getpid()})

    def __serve_build_asgi_app__(self) -> Any:
        """Serve's HTTP ingress: the local service's own HTTP app (same paths, bodies, streams)."""
        ctx, service = self.worker.ctx, self.worker.service
        kit = HttpKit(self.dispatcher)
        return build_http_app(kit, self.worker.state, ctx.process.registry, ctx.config.max_request_bytes,
                              service.http_routes(kit))

    def check_health(self) -> None:
        """Serve's health check: a replica whose model is not loaded is unhealthy (Ray replaces it)."""
        if not self.worker.state.ready:
            raise RuntimeError(f"{self.name}: {self.worker.state.reason()}")

    # ---- the gRPC methods, named like the RPCs ------------------------------------------------

    async def Echo(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("Echo", request, grpc_context)

    async def Info(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("Info", request, grpc_context)

    async def EchoRepeat(self, request: Message, grpc_context: Any = None) -> AsyncGenerator[Message, None]:
        async for msg in self._stream("EchoRepeat", request, grpc_context):
            yield msg

    async def Transcribe(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("Transcribe", request, grpc_context)

    async def DetectSpeech(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("DetectSpeech", request, grpc_context)

    async def Synthesize(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("Synthesize", request, grpc_context)

    async def SynthesizeStream(
        self, request: Message, grpc_context: Any = None
    ) -> AsyncGenerator[Message, None]:
        async for msg in self._stream("SynthesizeStream", request, grpc_context):
            yield msg

    async def ListVoices(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("ListVoices", request, grpc_context)

    async def Generate(self, request: Message, grpc_context: Any = None) -> AsyncGenerator[Message, None]:
        async for msg in self._stream("Generate", request, grpc_context):
            yield msg

    async def ListModels(self, request: Message, grpc_context: Any = None) -> Message:
        return await self._unary("ListModels", request, grpc_context)

    # ---- plumbing -------------------------------------------------------------------------------

    async def _unary(self, method: str, request: Message, grpc_context: Any) -> Message:
        call, token = call_info(method, grpc_context)
        try:
            return await self.dispatcher.invoke(method, request, call, token)
        except CallError as e:
            raise refuse(grpc_context, e) from e

    async def _stream(self, method: str, request: Message, grpc_context: Any) -> AsyncGenerator[Message, None]:
        call, token = call_info(method, grpc_context)
        stream = self.dispatcher.stream(method, request, call, token)
        try:
            async for msg in stream:
                yield msg
        except CallError as e:
            raise refuse(grpc_context, e) from e
        finally:
            await stream.aclose()


def call_info(method: str, grpc_context: Any) -> tuple[CallInfo, str | None]:
    """CallInfo and token from the metadata Serve's proxy forwards (none outside a gRPC call)."""
    md: Mapping[str, str] = {}
    if grpc_context is not None:
        md = {k.lower(): v for k, v in grpc_context.invocation_metadata() or () if isinstance(v, str)}
    rid = clean_id(md.get("x-request-id", "")[:MAX_ID_CHARS]) or new_request_id()
    call = CallInfo(
        method=method, protocol="grpc", request_id=rid,
        session_id=clean_id(md.get("x-session-id", "")[:MAX_ID_CHARS]),
        turn_id=clean_id(md.get("x-turn-id", "")[:MAX_ID_CHARS]),
    )
    return call, md.get("x-internal-token")


def refuse(grpc_context: Any, err: CallError) -> CallRefused:
    """Put ``err``'s code and message on the gRPC context; the caller raises what this returns."""
    if grpc_context is not None:
        grpc_context.set_code(grpc_status(err))
        grpc_context.set_details(err.message)
    return CallRefused(f"{err.code}: {err.message}")
