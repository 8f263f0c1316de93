"""Streaming operations over HTTP: frames out (and, for bidi, frames in), with disconnect = cancel.

:class:`FrameStreamResponse` is the ASGI response of a SERVER_STREAM or BIDI_STREAM call
(frame format: ``core.wire.frames``). It

* pulls the first response before answering, so an error raised before the first message is a
  plain error reply with its own HTTP status (400, 401, 429, 503...), like a unary call's;
* then answers 200 and writes one frame per message as it comes (chunked transfer); an error
  after that ends the body with a final ``{"error": ...}`` frame;
* for BIDI_STREAM, feeds the handler the request messages parsed from the request body frames
  as they arrive (the body is read by a pump task, the only reader of ``receive``);
* cancels the handler as soon as the client disconnects (the pump sees ``http.disconnect``),
  whether the handler is waiting on its engine or on a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from google.protobuf.message import Message
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.errors import CallError, InvalidArgument, retry_after_header
from core.wire import Kind, Operation
from core.wire.frames import FrameFormat, FrameReader, data_frame, error_frame, frame_message
from services.runtime.api import CallInfo
from services.runtime.decode import bad_body
from services.runtime.dispatch import Dispatcher
from services.runtime.media import error_body

_END = object()


class _BodyRequests:
    """The request iterator of a bidi call over HTTP: messages decoded from body frames by the pump."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    def __aiter__(self) -> _BodyRequests:
        return self

    async def __anext__(self) -> Message:
        item = await self.queue.get()
        if item is _END:
            self.queue.put_nowait(_END)  # a second read after the end ends again
            raise StopAsyncIteration
        if isinstance(item, CallError):
            raise item
        assert isinstance(item, Message)
        return item


class FrameStreamResponse(Response):
    """The reply of one streaming call (see the module docstring)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        op: Operation,
        call: CallInfo,
        token: str | None,
        fmt: FrameFormat,
        media: str,
        request: Message | None,
        max_frame_bytes: int,
    ) -> None:
        super().__init__(media_type=media)
        self.dispatcher, self.op, self.call, self.token = dispatcher, op, call, token
        self.fmt, self.media, self.request, self.max_frame_bytes = fmt, media, request, max_frame_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requests = _BodyRequests() if self.op.kind is Kind.BIDI_STREAM else None
        work = asyncio.create_task(self._respond(send, requests), name=f"http-stream-{self.op.name}")
        pump = asyncio.create_task(self._pump(receive, requests), name="http-stream-pump")
        try:
            await asyncio.wait({work, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the client went away (or we are being cancelled): cancel the handler
                work.cancel()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            with contextlib.suppress(asyncio.CancelledError):
                await work

    async def _pump(self, receive: Receive, requests: _BodyRequests | None) -> None:
        """Feed body frames to a bidi handler, then return once the client disconnects."""
        if requests is not None:
            reader = FrameReader(self.fmt, self.max_frame_bytes)
            try:
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        requests.queue.put_nowait(_END)
                        return
                    more = bool(message.get("more_body", False))
                    frames = reader.feed(message.get("body", b""))
                    if not more:
                        frames += reader.finish()
                    for frame in frames:
                        if frame.error is not None:
                            raise InvalidArgument(
                                "a request stream carries only {'data': ...} frames; got an 'error' frame"
                            )
                        requests.queue.put_nowait(frame_message(self.op.request, frame, self.fmt))
                requests.queue.put_nowait(_END)
            except CallError as err:  # a malformed frame, or a body over the size limit
                requests.queue.put_nowait(err)
            except Exception as e:  # whatever else a decoder raises on the client's frames is theirs too
                requests.queue.put_nowait(bad_body(self.op, self.fmt, e))
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _respond(self, send: Send, requests: _BodyRequests | None) -> None:
        call = self.call
        source: Message | AsyncIterator[Message] | None = requests if requests is not None else self.request
        assert source is not None
        stream = self.dispatcher.stream(self.op.name, source, call, self.token)
        async with contextlib.aclosing(stream):
            try:
                first = await anext(stream, None)
            except CallError as err:
                body, media = error_body(err, self.media)
                await _start(send, err.http_status, media, call.request_id, retry_after_header(err))
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await _start(send, 200, self.media, call.request_id)
            if first is not None:
                await send({"type": "http.response.body", "body": data_frame(first, self.fmt), "more_body": True})
                try:
                    async for msg in stream:
                        chunk = data_frame(msg, self.fmt)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except CallError as err:
                    tail = error_frame(err.code, err.message, self.fmt)
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(send: Send, status: int, media: str, request_id: str, retry_after: str | None = None) -> None:
    headers = [(b"content-type", media.encode()), (b"x-request-id", request_id.encode()),
               (b"cache-control", b"no-store")]
    if retry_after:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
