"""In-process Control.Echo servers that honour the service wire contract, for the hub's tests and benchmark.

* :class:`EchoGrpcServer`: a ``grpc.aio`` server with generic handlers for ``ultravox.v1.Control/Echo``
  and the server stream ``Control/EchoRepeat``;
* :class:`EchoHttpServer`: a bare ASGI app under uvicorn serving ``POST /rpc/ultravox.v1.Control/Echo``
  with msgpack or JSON bodies (chosen by Content-Type) and ``{"error": {...}}`` bodies on failure, and
  ``Control/EchoRepeat`` as stream frames (msgpack maps or NDJSON, ``core.wire.frames``);
* :class:`TcpEchoServer` / :class:`TcpEchoClient`: length-prefixed raw TCP echo, the latency floor.

Both RPC servers check the ``x-internal-token`` and count the calls they handle per protocol in a shared
:class:`Counts`. Test hooks in the payload: ``reject:`` gets INVALID_ARGUMENT / 400, ``fail:`` INTERNAL /
500, ``unavailable:`` UNAVAILABLE / 503. Everything binds to 127.0.0.1 only.

Run as a script, it serves all three (or ``--only`` some) and prints their ports as one JSON line, then
serves until stdin closes or SIGTERM; ``scripts/bench/hub.py --self-serve`` runs it that way, so the
servers get their own process as a real service would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import msgpack
import uvicorn
from google.protobuf.message import Message

from core.errors import InvalidArgument
from core.wire import CONTROL_OPS, from_json, from_msgpack, to_json, to_msgpack
from core.wire.frames import NDJSON_TYPE, FrameFormat, data_frame

ECHO = CONTROL_OPS["Echo"]
REPEAT = CONTROL_OPS["EchoRepeat"]
HOST = "127.0.0.1"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# payload prefix -> (gRPC status, HTTP status)
HOOKS: dict[bytes, tuple[grpc.StatusCode, int]] = {
    b"reject:": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    b"fail:": (grpc.StatusCode.INTERNAL, 500),
    b"unavailable:": (grpc.StatusCode.UNAVAILABLE, 503),
}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _hook(payload: bytes) -> tuple[grpc.StatusCode, int] | None:
    for prefix, codes in HOOKS.items():
        if payload.startswith(prefix):
            return codes
    return None


@dataclass
class Counts:
    """Calls handled per protocol ("grpc", "msgpack", "json"), errors included."""

    by_protocol: dict[str, int] = field(default_factory=lambda: {"grpc": 0, "msgpack": 0, "json": 0})
    last_metadata: dict[str, str] = field(default_factory=dict)

    def hit(self, protocol: str, metadata: dict[str, str]) -> None:
        self.by_protocol[protocol] += 1
        self.last_metadata = metadata


class EchoGrpcServer:
    """Control/Echo over gRPC on 127.0.0.1; ``port=0`` picks a free port, kept across restarts."""

    def __init__(self, token: str, counts: Counts | None = None, port: int = 0) -> None:
        self.token, self.port = token, port
        self.counts = counts or Counts()
        self._server: grpc.aio.Server | None = None

    async def _echo(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.counts.hit("grpc", md)
        if md.get("x-internal-token") != self.token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong x-internal-token")
        payload: bytes = request.payload
        hook = _hook(payload)
        if hook is not None:
            await context.abort(hook[0], f"test hook {payload[:16]!r}")
        return ECHO.response(payload=payload)

    async def _repeat(self, request: Message, context: grpc.aio.ServicerContext) -> None:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.counts.hit("grpc", md)
        if md.get("x-internal-token") != self.token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong x-internal-token")
        reply = ECHO.response(payload=getattr(request, "payload", b""))
        for _ in range(getattr(request, "count", 0)):
            await context.write(reply)

    async def start(self) -> int:
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ])
        handler = grpc.unary_unary_rpc_method_handler(
            self._echo, request_deserializer=ECHO.request.FromString,
            response_serializer=ECHO.response.SerializeToString,
        )
        repeat = grpc.unary_stream_rpc_method_handler(
            self._repeat, request_deserializer=REPEAT.request.FromString,
            response_serializer=REPEAT.response.SerializeToString,
        )
        generic = grpc.method_handlers_generic_handler(ECHO.grpc_service, {"Echo": handler, "EchoRepeat": repeat})
        server.add_generic_rpc_handlers((generic,))
        self.port = server.add_insecure_port(f"{HOST}:{self.port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


@dataclass(frozen=True)
class _Codec:
    name: str
    encode: Callable[[Message], bytes]
    decode: Callable[[type[Message], bytes], Message]
    dump: Callable[[Any], bytes]


def _dump_msgpack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


_CODECS = {
    "application/msgpack": _Codec("msgpack", to_msgpack, from_msgpack, _dump_msgpack),
    "application/json": _Codec("json", to_json, from_json, lambda o: json.dumps(o).encode()),
}


class EchoHttpServer:
    """Control/Echo over HTTP (msgpack or JSON) under uvicorn, on 127.0.0.1."""

    def __init__(self, token: str, counts: Counts | None = None, port: int = 0) -> None:
        self.token, self.port = token, port
        self.counts = counts or Counts()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        codec = _CODECS.get(ctype)
        if codec is None:
            bad = ("INVALID_ARGUMENT", f"unsupported content-type {ctype!r}")
            return await self._reply(send, _CODECS["application/json"], 415, error=bad)
        self.counts.hit(codec.name, headers)
        if headers.get("x-internal-token") != self.token:
            bad = ("UNAUTHENTICATED", "missing or wrong x-internal-token")
            return await self._reply(send, codec, 401, error=bad)
        if scope["method"] == "POST" and scope["path"] == REPEAT.http_path:
            return await self._repeat(send, codec, body)
        if scope["method"] != "POST" or scope["path"] != ECHO.http_path:
            return await self._reply(send, codec, 404, error=("NOT_FOUND", f"no route {scope['path']}"))
        try:
            req = codec.decode(ECHO.request, body)
        except InvalidArgument as e:
            return await self._reply(send, codec, 400, error=("INVALID_ARGUMENT", e.message))
        payload: bytes = req.payload
        hook = _hook(payload)
        if hook is not None:
            bad = (hook[0].name, f"test hook {payload[:16]!r}")
            return await self._reply(send, codec, hook[1], error=bad)
        await self._reply(send, codec, 200, body=codec.encode(ECHO.response(payload=payload)))

    @staticmethod
    async def _repeat(send: Send, codec: _Codec, body: bytes) -> None:
        try:
            req = codec.decode(REPEAT.request, body)
        except InvalidArgument as e:
            return await EchoHttpServer._reply(send, codec, 400, error=("INVALID_ARGUMENT", e.message))
        fmt: FrameFormat = "msgpack" if codec.name == "msgpack" else "json"
        ctype = "application/msgpack" if fmt == "msgpack" else NDJSON_TYPE
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype.encode())]})
        frame = data_frame(ECHO.response(payload=getattr(req, "payload", b"")), fmt)
        for _ in range(getattr(req, "count", 0)):
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _reply(
        send: Send, codec: _Codec, status: int, *, body: bytes = b"", error: tuple[str, str] | None = None
    ) -> None:
        if error is not None:
            body = codec.dump({"error": {"code": error[0], "message": error[1]}})
        ctype = next(k for k, c in _CODECS.items() if c is codec)
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def start(self) -> int:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and accepted sockets inherit it. With proto 0, every small reply stalls ~40 ms (Nagle
        # holding the body behind the headers until the client's delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, interface="asgi3", lifespan="off", log_level="warning", access_log=False,
            proxy_headers=False, timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        return self.port

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


class TcpEchoServer:
    """Length-prefixed (4-byte big-endian) echo over plain asyncio TCP: the latency floor."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: asyncio.Server | None = None

    @staticmethod
    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                data = await reader.readexactly(int.from_bytes(head, "big"))
                writer.write(head + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


class TcpEchoClient:
    """One connection to a :class:`TcpEchoServer`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> TcpEchoClient:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def echo(self, payload: bytes) -> bytes:
        self._writer.write(len(payload).to_bytes(4, "big") + payload)
        head = await self._reader.readexactly(4)
        return await self._reader.readexactly(int.from_bytes(head, "big"))

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def _serve(token: str, only: set[str]) -> None:
    counts = Counts()
    servers: list[EchoGrpcServer | EchoHttpServer | TcpEchoServer] = []
    ports: dict[str, Any] = {"token": token}
    for kind, server in (("grpc", EchoGrpcServer(token, counts)), ("http", EchoHttpServer(token, counts)),
                         ("tcp", TcpEchoServer())):
        if kind in only:
            ports[f"{kind}_port"] = await server.start()
            servers.append(server)
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(stdin.read())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    for s in servers:
        await s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", default="bench-token")
    ap.add_argument("--only", default="grpc,http,tcp", help="comma-separated subset of grpc,http,tcp")
    args = ap.parse_args()
    asyncio.run(_serve(args.token, set(args.only.split(","))))


if __name__ == "__main__":
    main()
