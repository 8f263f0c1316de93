"""HTTP transports: msgpack and proto3 JSON bodies over one keep-alive httpx client per service.

``POST {endpoint.http_base}{operation.http_path}`` with ``Content-Type`` ``application/msgpack``
or ``application/json``; the reply comes in the same type. A non-2xx body is
``{"error": {"code": "...", "message": "..."}}`` and becomes the matching ``core.errors``
exception (by HTTP status when the body says nothing). Connection failures (refused, reset,
a broken keep-alive connection, a connect timeout) are ``TransportError``; a read or write
timeout means the deadline passed.

Streams: the reply of a streaming operation is a body of frames (``core.wire.frames``: msgpack
maps back to back, or NDJSON), read and decoded as chunks arrive; a final error frame becomes
its ``core.errors`` exception, and a body cut short (a reset, an incomplete chunked body) is a
``TransportError``. A bidi request goes out as a chunked body of frames, streamed from the
request iterator, but HTTP/1.1 here is half-duplex: the reply is read only once the whole
request body has been sent, so over HTTP a bidi call answers after its requests end (gRPC is
the live path). Closing the generator closes the response, i.e. the connection, which the
service sees as a disconnect and answers by cancelling its handler.

Both codecs share one :class:`HttpClientPool`, so a service has one client and one set of
keep-alive connections whichever body type is used. A client costs ~20 ms to build (mostly
its TLS context), so the pool builds one TLS context and reuses each client until the
service's HTTP port changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
from google.protobuf.message import Message

from core.errors import (
    HTTP_TO_CODE,
    CallError,
    DeadlineExceeded,
    InvalidArgument,
    ServiceFailed,
    TransportError,
    error_from_code,
    parse_retry_after,
)
from core.managers.endpoint import Endpoint
from core.managers.hub.transports.base import StreamCall, UnaryCall
from core.wire import Kind, from_json, from_msgpack, to_json, to_msgpack
from core.wire.frames import NDJSON_TYPE, Frame, FrameFormat, FrameReader, data_frame, frame_message


@dataclass(frozen=True, slots=True)
class HttpCodec:
    """How one body type is written and read."""

    name: str
    content_type: str
    encode: Callable[[Message], bytes]
    decode: Callable[[type[Message], bytes], Message]
    load: Callable[[bytes], Any]
    """Parse an error body into plain Python objects."""
    frames: FrameFormat
    stream_type: str
    """Content-Type of a stream of frames in this codec."""


def _load_msgpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


MSGPACK = HttpCodec(
    "msgpack", "application/msgpack", to_msgpack, from_msgpack, _load_msgpack, "msgpack", "application/msgpack"
)
JSON = HttpCodec("json", "application/json", to_json, from_json, json.loads, "json", NDJSON_TYPE)
CODECS = {c.name: c for c in (MSGPACK, JSON)}


class HttpClientPool:
    """One ``httpx.AsyncClient`` per service, kept while the service's HTTP base URL is unchanged."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        max_keepalive: int = 64,
        keepalive_expiry_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network for every client (``httpx.MockTransport`` in tests)."""
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive,
            keepalive_expiry=keepalive_expiry_s,
        )
        self._clients: dict[str, tuple[str, httpx.AsyncClient]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def client(self, ep: Endpoint) -> httpx.AsyncClient:
        entry = self._clients.get(ep.name)
        if entry is not None and entry[0] == ep.http_base:
            return entry[1]
        if self._closed:
            raise TransportError("the HTTP transport is closed")
        if entry is not None:  # the service came back on another port
            self._retire(entry[1])
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        # trust_env=False: an HTTP(S)_PROXY in the environment must never capture loopback calls.
        client = httpx.AsyncClient(
            limits=self._limits, verify=self._ssl, trust_env=False, timeout=None, transport=self._transport
        )
        self._clients[ep.name] = (ep.http_base, client)
        return client

    def _retire(self, client: httpx.AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        """Close every client. Idempotent; the pool builds no client afterwards."""
        self._closed = True
        clients, self._clients = [c for _, c in self._clients.values()], {}
        for c in clients:
            self._retire(c)
        pending = list(self._retiring)
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)


def error_from_response(resp: httpx.Response, codec: HttpCodec) -> CallError:
    """The ``core.errors`` exception for a non-2xx reply."""
    code, message = "", ""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    loader = next((c.load for c in CODECS.values() if ctype in (c.content_type, c.stream_type)), None)
    if loader is not None and resp.content:
        with contextlib.suppress(Exception):  # a body that is not our error shape: use the status
            err = loader(resp.content).get("error") or {}
            code, message = str(err.get("code") or ""), str(err.get("message") or "")
    if not code:
        fallback = "INTERNAL" if resp.status_code >= 500 else "FAILED_PRECONDITION"
        code = HTTP_TO_CODE.get(resp.status_code, fallback)
    if not message:
        message = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
    return error_from_code(code, message, retry_after_s=parse_retry_after(resp.headers.get("retry-after")))


class HttpTransport:
    """Unary calls over HTTP with one body type (msgpack or JSON)."""

    def __init__(self, codec: str | HttpCodec, *, pool: HttpClientPool | None = None) -> None:
        if isinstance(codec, str):
            if codec not in CODECS:
                raise ValueError(f"unknown HTTP codec {codec!r}; known: {', '.join(CODECS)}")
            codec = CODECS[codec]
        self.codec = codec
        self.pool = pool or HttpClientPool()
        self._headers = {"content-type": codec.content_type, "accept": codec.content_type}

    async def unary(self, call: UnaryCall) -> Message:
        timeout = call.remaining()
        if timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before it was sent")
        ep = call.endpoint
        url = ep.http_base + call.operation.http_path
        headers = {**dict(call.metadata), **self._headers}
        body = self.codec.encode(call.request)
        try:
            resp = await self.pool.client(ep).post(
                url, content=body, headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(call.connect_timeout_s, timeout)),
            )
        except httpx.ConnectTimeout as e:
            if call.remaining() <= 0:
                raise DeadlineExceeded(f"deadline passed while connecting to {ep.http_base}") from e
            raise TransportError(
                f"no HTTP connection to {ep.http_base} within {call.connect_timeout_s:g} s"
            ) from e
        except httpx.TimeoutException as e:
            raise DeadlineExceeded(f"no reply from {url} before the deadline ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise TransportError(f"HTTP {type(e).__name__} to {url}: {e}") from e
        if not resp.is_success:
            raise error_from_response(resp, self.codec)
        try:
            return self.codec.decode(call.operation.response, resp.content)
        except InvalidArgument as e:  # the service sent something we cannot read: its fault, not ours
            raise ServiceFailed(f"malformed {self.codec.name} reply from {url}: {e.message}") from e

    async def stream(self, call: StreamCall) -> AsyncGenerator[Message, None]:
        timeout = call.remaining()
        if timeout <= 0:
            raise DeadlineExceeded("the stream's deadline passed before it was opened")
        ep, op, codec = call.endpoint, call.operation, self.codec
        url = ep.http_base + op.http_path
        content: bytes | AsyncIterator[bytes]
        if op.kind is Kind.BIDI_STREAM:
            assert call.requests is not None
            content, ctype = _request_frames(call.requests, codec.frames), codec.stream_type
        else:
            assert call.request is not None
            content, ctype = codec.encode(call.request), codec.content_type
        headers = {**dict(call.metadata), "content-type": ctype, "accept": codec.stream_type}
        client = self.pool.client(ep)
        request = client.build_request(
            "POST", url, content=content, headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(call.connect_timeout_s, timeout)),
        )
        try:
            resp = await client.send(request, stream=True)
        except httpx.ConnectTimeout as e:
            if call.remaining() <= 0:
                raise DeadlineExceeded(f"deadline passed while connecting to {ep.http_base}") from e
            raise TransportError(f"no HTTP connection to {ep.http_base} within {call.connect_timeout_s:g} s") from e
        except httpx.TimeoutException as e:
            raise DeadlineExceeded(f"no reply from {url} before the deadline ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise TransportError(f"HTTP {type(e).__name__} to {url}: {e}") from e
        try:
            if not resp.is_success:
                await resp.aread()
                raise error_from_response(resp, codec)
            reader = FrameReader(codec.frames)
            async for chunk in resp.aiter_raw():
                for frame in _frames(reader.feed, chunk, url, codec):
                    yield _message(op.response, frame, codec, url)
            for frame in _frames(lambda _: reader.finish(), b"", url, codec):
                yield _message(op.response, frame, codec, url)
        except httpx.TimeoutException as e:
            raise DeadlineExceeded(f"{url}: the stream stalled past the deadline ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise TransportError(f"HTTP stream from {url} broke: {type(e).__name__}: {e}") from e
        finally:
            await resp.aclose()

    async def close(self) -> None:
        await self.pool.aclose()


def _frames(parse: Callable[[bytes], list[Frame]], chunk: bytes, url: str, codec: HttpCodec) -> list[Frame]:
    try:
        return parse(chunk)
    except InvalidArgument as e:  # a body we cannot read: the service's fault, not the caller's
        raise ServiceFailed(f"malformed {codec.name} stream from {url}: {e.message}") from e


def _message(cls: type[Message], frame: Frame, codec: HttpCodec, url: str) -> Message:
    """The message of a data frame; the error of a final error frame is raised as sent."""
    if frame.error is not None:
        raise error_from_code(*frame.error)
    try:
        return frame_message(cls, frame, codec.frames)
    except InvalidArgument as e:
        raise ServiceFailed(f"malformed {codec.name} stream frame from {url}: {e.message}") from e


async def _request_frames(requests: AsyncIterator[Message], fmt: FrameFormat) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield data_frame(msg, fmt)
