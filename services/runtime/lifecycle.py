"""One service process from bind to exit: servers up, model load, signals, drain.

Order matters: both ports are bound before anything starts (so a taken port fails fast with a
clear error), the servers answer liveness while the model loads in a worker thread, health
turns SERVING only after the load, and on SIGTERM/SIGINT health turns NOT_SERVING, listeners
close, in-flight calls and streams get ``stop_grace_s`` to finish (then they are cancelled),
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

import uvicorn
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from core.context import ServiceContext
from core.errors import SupervisorError
from core.wire import CONTROL_OPS
from services.runtime.api import ModelService
from services.runtime.dispatch import Dispatcher
from services.runtime.grpc_server import bind_error, build_grpc_server
from services.runtime.http_app import HttpKit, build_http_app
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import Phase, ServiceState
from services.runtime.watchdog import ParentWatchdog

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_STARTUP, EXIT_ORPHANED = 0, 1, 2, 3, 4
CANCEL_WAIT_S = 2.0
"""After the grace, how long cancelled handlers get to run their ``finally`` before close()."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True, slots=True)
class StopRequest:
    reason: str
    exit_code: int
    grace_s: float


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_http_socket(service: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (accepted
    # sockets inherit it); without it every small HTTP reply stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise bind_error(service, host, port, "http", e) from e
    sock.listen(512)
    sock.setblocking(False)
    return sock


def package_version() -> str:
    try:
        return metadata.version("ultravox-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


class ServiceRunner:
    """Owns the servers, the health servicer and the stop sequence of one service process."""

    def __init__(self, ctx: ServiceContext, service: ModelService) -> None:
        cfg = ctx.config
        if service.role != cfg.role:
            raise SupervisorError(
                f"service {cfg.name!r} is configured with role {cfg.role!r} but module {cfg.module!r} "
                f"serves role {service.role!r}; fix 'role' or 'module' in config/services.yaml"
            )
        self.ctx, self.service, self.name = ctx, service, cfg.name
        self.log = ctx.process.log
        self.state = ServiceState(cfg.name)
        self.metrics = RuntimeMetrics(ctx.process.registry, cfg.name, cfg.role)
        self.dispatcher = Dispatcher(
            service_name=cfg.name, service=service, token=ctx.token, state=self.state,
            metrics=self.metrics, version=package_version(),
        )
        self.health = health_aio.HealthServicer()
        self.role_services = sorted(
            {op.grpc_service for name, op in self.dispatcher.operations.items() if name not in CONTROL_OPS}
        )
        self.grpc, self.grpc_port = build_grpc_server(
            self.dispatcher, self.health, cfg.host, ctx.grpc_port, cfg.max_request_bytes
        )
        self.http_sock = bind_http_socket(cfg.name, cfg.host, ctx.http_port)
        self.http_port = self.http_sock.getsockname()[1]
        kit = HttpKit(self.dispatcher)
        app = build_http_app(
            kit, self.state, ctx.process.registry, cfg.max_request_bytes, service.http_routes(kit)
        )
        self.http = _Uvicorn(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=math.ceil(cfg.stop_grace_s) + 1,  # backstop; _drain decides
        ))
        self._stop: asyncio.Future[StopRequest] | None = None
        self._force = asyncio.Event()

    def request_stop(self, req: StopRequest) -> None:
        if self._stop is None:
            return
        if self._stop.done():
            self.log.warning("second stop request (%s): cancelling in-flight calls now", req.reason)
            self._force.set()
            return
        self._stop.set_result(req)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        await self.health.set("", NOT_SERVING)
        for svc in self.role_services:
            await self.health.set(svc, NOT_SERVING)
        await self.health.set(CONTROL_OPS["Echo"].grpc_service, SERVING)
        await self.grpc.start()
        http_task = asyncio.create_task(self.http.serve(sockets=[self.http_sock]), name="http")
        while not self.http.started and not http_task.done():  # noqa: ASYNC110 - uvicorn only has a flag
            await asyncio.sleep(0.01)
        if http_task.done():
            await self.grpc.stop(0)
            http_task.result()
            raise SupervisorError(f"service {self.name!r}: the HTTP server stopped during startup")
        http_task.add_done_callback(self._http_ended)
        self.log.info("listening", extra={"grpc_port": self.grpc_port, "http_port": self.http_port,
                                          "host": self.ctx.config.host})
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, StopRequest(
                f"received {signal.Signals(sig).name}", EXIT_OK, self.ctx.config.stop_grace_s))
        background = [asyncio.create_task(self._load(), name="load")]
        if self.ctx.parent_pid is not None:
            watchdog = ParentWatchdog(self.ctx.parent_pid, self._orphaned, self.log)
            background.append(asyncio.create_task(watchdog.run(), name="watchdog"))
        req = await self._stop
        self.log.info("stopping", extra={"reason": req.reason, "grace_s": req.grace_s})
        await self._drain(req.grace_s, http_task)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        self.service.close()
        self.log.info("stopped", extra={"exit_code": req.exit_code})
        return req.exit_code

    def _http_ended(self, task: asyncio.Task[None]) -> None:
        if self._stop is not None and not self._stop.done():
            self.log.error("the HTTP server stopped on its own; stopping the service")
            self.request_stop(StopRequest("HTTP server stopped unexpectedly", EXIT_CRASH, 0.0))

    def _orphaned(self, reason: str) -> None:
        self.log.error("exiting so no orphan is left behind: %s", reason)
        self.request_stop(StopRequest(reason, EXIT_ORPHANED, min(1.0, self.ctx.config.stop_grace_s)))

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def work() -> None:
            error: BaseException | None = None
            try:
                self.service.load()
            except BaseException as e:
                error = e
            with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting anyway
                loop.call_soon_threadsafe(settle, error)

        self.state.loading()
        cfg = self.ctx.config
        self.log.info("loading model", extra={"model": cfg.model, "engine": cfg.engine})
        started = time.perf_counter()
        threading.Thread(target=work, name=f"{self.name}-load", daemon=True).start()
        try:
            await done
        except Exception as e:
            self.state.failed(f"{type(e).__name__}: {e}")
            self.log.error("model load failed: %s", e, exc_info=e)
            self.request_stop(StopRequest(f"model load failed: {e}", EXIT_STARTUP, 0.0))
            return
        seconds = time.perf_counter() - started
        if self.state.phase is Phase.DRAINING:
            return
        self.state.loaded(seconds)
        self.metrics.model_load.labels(self.name).set(seconds)
        self.metrics.ready.labels(self.name).set(1)
        await self.health.set("", SERVING)
        for svc in self.role_services:
            await self.health.set(svc, SERVING)
        self.log.info("ready: model loaded", extra={"load_s": round(seconds, 3)})

    async def _drain(self, grace: float, http_task: asyncio.Task[None]) -> None:
        self.state.draining()
        self.metrics.ready.labels(self.name).set(0)
        await self.health.enter_graceful_shutdown()
        grpc_stop = asyncio.create_task(self.grpc.stop(grace))
        self.http.should_exit = True
        idle = asyncio.create_task(self.dispatcher.wait_idle(grace))
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait({idle, force}, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        drained = idle.done() and idle.result()
        idle.cancel()
        await self.grpc.stop(0)  # also ends health Watch streams, which never finish by themselves
        if not drained:
            left = self.dispatcher.in_flight
            self.log.warning("cancelling calls and streams still in flight", extra={"in_flight": left})
            self.dispatcher.cancel_all()  # HTTP ones: uvicorn's force_exit stops waiting but cancels nothing
            self.http.force_exit = True
            if not await self.dispatcher.wait_idle(CANCEL_WAIT_S):
                self.log.warning("calls ignored cancellation", extra={"in_flight": self.dispatcher.in_flight})
        await grpc_stop
        with contextlib.suppress(asyncio.CancelledError):
            await http_task
