"""HTTP transports: msgpack and proto3 JSON bodies over one keep-alive httpx client per service.

``POST {endpoint.http_base}{operation.http_path}`` with ``Content-Type`` ``application/msgpack``
or ``application/json``; the reply comes in the same type. A non-2xx body is
``{"error": {"code": "...", "message": "..."}}`` and becomes the matching ``core.errors``
exception (by HTTP status when the body says nothing). Connection failures (refused, reset,
a broken keep-alive connection, a connect timeout) are ``TransportError``; a read or write
timeout means the deadline passed.

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
from collections.abc import Callable
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
)
from core.managers.endpoint import Endpoint
from core.managers.hub.transports.base import UnaryCall
from core.wire import from_json, from_msgpack, to_json, to_msgpack


@dataclass(frozen=True, slots=True)
class HttpCodec:
    """How one body type is written and read."""

    name: str
    content_type: str
    encode: Callable[[Message], bytes]
    decode: Callable[[type[Message], bytes], Message]
    load: Callable[[bytes], Any]
    """Parse an error body into plain Python objects."""


def _load_msgpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


MSGPACK = HttpCodec("msgpack", "application/msgpack", to_msgpack, from_msgpack, _load_msgpack)
JSON = HttpCodec("json", "application/json", to_json, from_json, json.loads)
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
    loader = next((c.load for c in CODECS.values() if c.content_type == ctype), None)
    if loader is not None and resp.content:
        with contextlib.suppress(Exception):  # a body that is not our error shape: use the status
            err = loader(resp.content).get("error") or {}
            code, message = str(err.get("code") or ""), str(err.get("message") or "")
    if not code:
        fallback = "INTERNAL" if resp.status_code >= 500 else "FAILED_PRECONDITION"
        code = HTTP_TO_CODE.get(resp.status_code, fallback)
    if not message:
        message = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
    return error_from_code(code, message)


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

    async def close(self) -> None:
        await self.pool.aclose()
