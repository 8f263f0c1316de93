"""The HTTP side: every operation at ``Operation.http_path`` plus probes and /metrics.

Bodies are msgpack (``application/msgpack`` or ``application/x-msgpack``; bytes stay raw) or
proto3 JSON (``application/json``; bytes are base64), and the reply uses the request's type.
Streaming operations reply with frames (msgpack maps back to back, or NDJSON for a JSON
request; see ``http_stream.py`` and ``core.wire.frames``). Errors are
``{"error": {"code", "message"}}`` with the error's HTTP status. Probes and /metrics need no
token; everything else does (``X-Internal-Token`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Literal

from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core.errors import CallError, NotFound, Unauthenticated, retry_after_header
from core.logs import MAX_ID_CHARS, clean_id, new_request_id
from core.wire import Kind, Operation, to_json, to_msgpack
from core.wire.frames import NDJSON_TYPE
from services.runtime.api import CallInfo, Transport
from services.runtime.decode import decode_http
from services.runtime.dispatch import TOKEN_HINT, Dispatcher
from services.runtime.http_stream import FrameStreamResponse
from services.runtime.limits import BodyLimit
from services.runtime.media import (
    JSON_TYPE,
    MSGPACK_TYPES,
    STREAM_JSON_TYPES,
    UnsupportedMediaType,
    error_body,
    media_type,
)
from services.runtime.state import ServiceState

__all__ = ["JSON_TYPE", "MSGPACK_TYPES", "HttpKit", "UnsupportedMediaType", "build_http_app", "error_body",
           "media_type"]


class HttpKit:
    """Auth, call info, dispatch and error rendering for HTTP routes, the service's own included."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    @staticmethod
    def token(request: Request) -> str | None:
        token = request.headers.get("x-internal-token")
        if token:
            return token
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def call_info(self, request: Request, method: str, protocol: Transport) -> CallInfo:
        # Ids are echoed in headers and logged: only clean ones of at most 64 characters are taken.
        h = request.headers
        rid = clean_id(h.get("x-request-id", "")[:MAX_ID_CHARS]) or new_request_id()
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        return CallInfo(
            method=method, protocol=protocol, request_id=rid, peer=peer,
            session_id=clean_id(h.get("x-session-id", "")[:MAX_ID_CHARS]),
            turn_id=clean_id(h.get("x-turn-id", "")[:MAX_ID_CHARS]),
        )

    def authenticate(self, request: Request) -> None:
        token = self.token(request)
        if token is None:
            raise Unauthenticated(
                f"missing internal token: {TOKEN_HINT}, or an 'Authorization: Bearer <token>' header"
            )
        self.dispatcher.check_token(token)

    async def invoke(self, request: Request, call: CallInfo, message: Message) -> Message:
        """Dispatch; a CallError raised here is already counted and logged."""
        return await self.dispatcher.invoke(call.method, message, call, self.token(request))

    def stream(
        self, request: Request, call: CallInfo, message: Message | AsyncIterator[Message]
    ) -> AsyncGenerator[Message, None]:
        """Open a streaming operation (e.g. for an OpenAI-compatible SSE route); close it when done."""
        return self.dispatcher.stream(call.method, message, call, self.token(request))

    def refused(self, call: CallInfo, err: CallError, media: str = JSON_TYPE) -> Response:
        """Count, log and render an error raised *before* :meth:`invoke` (auth, body, media type)."""
        self.dispatcher.refuse(call, err)
        return self.render(err, media, call.request_id)

    @staticmethod
    def render(err: CallError, media: str, request_id: str = "") -> Response:
        body, media_out = error_body(err, media)
        headers = {"x-request-id": request_id} if request_id else {}
        if retry := retry_after_header(err):
            headers["retry-after"] = retry
        return Response(body, status_code=err.http_status, media_type=media_out, headers=headers)


def _op_endpoint(kit: HttpKit, op: Operation, max_request_bytes: int) -> Callable[[Request], object]:
    streaming = op.kind is not Kind.UNARY
    json_types = STREAM_JSON_TYPES if streaming else frozenset({JSON_TYPE})

    async def endpoint(request: Request) -> Response:
        media = media_type(request)
        protocol: Literal["msgpack", "json"] = "msgpack" if media in MSGPACK_TYPES else "json"
        call = kit.call_info(request, op.name, protocol)
        message: Message | None = None
        try:
            kit.authenticate(request)
            if media not in MSGPACK_TYPES and media not in json_types:
                raise UnsupportedMediaType(
                    f"Content-Type {media or '(none)'!r} is not supported; send the body as "
                    f"application/msgpack (or application/x-msgpack) or {' or '.join(sorted(json_types))}"
                )
            if op.kind is not Kind.BIDI_STREAM:  # a bidi body is a stream of frames, read as it comes
                body = await request.body()
                message = decode_http(op, protocol, body)
        except CallError as err:
            return kit.refused(call, err, media)
        if streaming:
            out_media = media if protocol == "msgpack" else NDJSON_TYPE
            return FrameStreamResponse(
                kit.dispatcher, op, call, kit.token(request), protocol, out_media, message, max_request_bytes
            )
        assert message is not None
        try:
            reply = await kit.invoke(request, call, message)
        except CallError as err:
            return kit.render(err, media, call.request_id)
        data = to_msgpack(reply) if protocol == "msgpack" else to_json(reply)
        return Response(data, media_type=media, headers={"x-request-id": call.request_id})

    return endpoint


def build_http_app(
    kit: HttpKit,
    state: ServiceState,
    registry: CollectorRegistry,
    max_request_bytes: int,
    extra_routes: Sequence[BaseRoute] = (),
) -> BodyLimit:
    """The ASGI app for uvicorn: operation routes, service routes, probes, metrics."""
    ops = kit.dispatcher.operations.values()

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "alive", "service": state.service, "phase": state.phase.value})

    async def readyz(request: Request) -> Response:
        if state.ready:
            body = {"status": "ready", "service": state.service, "load_time_s": state.load_time_s}
            return JSONResponse(body)
        return JSONResponse(
            {"status": state.phase.value, "service": state.service, "reason": state.reason()}, status_code=503
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def not_routed(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        routes = ", ".join(f"POST {op.http_path}" for op in ops)
        err = NotFound(
            f"no route for {request.method} {request.url.path} (HTTP {status}); this service serves "
            f"{routes}, and GET /livez, /readyz, /metrics"
        )
        return JSONResponse({"error": {"code": err.code, "message": err.message}}, status_code=status)

    routes: list[BaseRoute] = [
        Route(op.http_path, _op_endpoint(kit, op, max_request_bytes), methods=["POST"]) for op in ops
    ]
    routes += [
        *extra_routes,
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_routed, 405: not_routed})
    return BodyLimit(app, max_request_bytes, render=kit.render)
