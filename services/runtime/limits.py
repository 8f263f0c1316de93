"""Request size limit for the HTTP side (gRPC enforces its own via max_receive_message_length).

The limit is applied while the body streams in, so a route never holds more than
``max_request_bytes`` of one request: a declared Content-Length over the limit fails on the
first read, and a chunked body fails as soon as it crosses the limit. The error surfaces in the
route as a ``CallError`` (413), so it is rendered in the request's content type and counted.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import CallError, InvalidArgument


class RequestTooLarge(InvalidArgument):
    http_status = 413

    def __init__(self, size: int, limit: int, *, declared: bool) -> None:
        what = f"is {size} bytes" if declared else f"exceeds {limit} bytes (read {size} so far)"
        super().__init__(
            f"request body {what}, over this service's limit of {limit} bytes (max_request_bytes in "
            "config/services.yaml); send shorter audio, or raise the limit"
        )


class BodyLimit:
    """ASGI middleware: stop reading a request body once it passes ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int, render: Callable[[CallError, str], Response]) -> None:
        self.app = app
        self.limit = limit
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        too_big = int(declared) if declared.isdigit() and int(declared) > self.limit else None
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            if too_big is not None:
                raise RequestTooLarge(too_big, self.limit, declared=True)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise RequestTooLarge(received, self.limit, declared=False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestTooLarge as err:
            if started:
                raise
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            await self.render(err, media)(scope, receive, send)
