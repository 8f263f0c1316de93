"""A model service as a real subprocess, launched the way main launches it (UV_LAUNCH_SPEC).

``ServiceProcess`` builds a ServiceContext for free loopback ports from ``config/services.yaml``
(``options`` merged in, ``overrides`` set), starts ``<python> -m <module>`` with its output in a
log file, and offers what a test needs: a gRPC channel with generic calls from the catalog, an
HTTP client, health and readiness waits, metrics, and a stop that escalates SIGTERM to SIGKILL.
``running()`` is the fixture shape: started, serving, stopped however the block ends. A test
whose fixtures include one gets its log tail in the failure report (tests/integration/conftest.py).

``service_python`` is the interpreter of a service's own venv, as main builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.config import load_settings
from core.config.models import ServiceConfig, Settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from core.managers.supervisor import VenvBuilder
from core.wire import operation

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(pred: Callable[[], Any], timeout: float, what: str, proc: ServiceProcess | None = None) -> Any:
    """Poll ``pred`` until it returns something truthy; fail early if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"service exited ({proc.proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def service_python(service: str) -> str:
    """Interpreter of ``service``'s own venv: ``$UV_<SERVICE>_PYTHON``, else the venv main builds
    for the default profile (built here if ``main.py --prepare-only`` has not run yet)."""
    given = os.environ.get(f"UV_{service.upper()}_PYTHON")
    if given:
        return given
    venv = asyncio.run(VenvBuilder(Paths.from_env()).ensure(load_settings(env={}).services[service]))
    return str(venv / "bin" / "python")


@dataclass
class ServiceProcess:
    """``<python> -m <module>`` for ``service`` (a services.yaml entry), with clients for the tests.

    ``timeout`` bounds the HTTP client's requests and, by default, each gRPC call;
    ``token_header`` sends the internal token on every HTTP request.
    """

    python: str
    workdir: Path
    service: str
    options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    parent_pid: int | None = field(default_factory=os.getpid)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    timeout: float = 120
    token_header: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = load_settings(env={})
        cfg = self.config(settings)
        settings = settings.model_copy(update={"services": {**settings.services, cfg.name: cfg}})
        paths = Paths(root=ROOT, var=self.workdir / "var", cache=self.cache or Paths.from_env().cache,
                      venvs=ROOT / ".venvs")
        g = GlobalContext.create(settings, paths)
        self.ctx = ServiceContext(ProcessContext(global_=g, name=cfg.name), cfg, self.grpc_port, self.http_port,
                                  parent_pid=self.parent_pid)
        self.name, self.role, self.token = cfg.name, cfg.role, self.ctx.token
        self.log_path = self.workdir / f"{self.name}-{self.grpc_port}.log"
        self.metadata = [("x-internal-token", self.token)]
        headers = {"x-internal-token": self.token} if self.token_header else None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=self.timeout,
                                 headers=headers)

    def config(self, settings: Settings) -> ServiceConfig:
        """The service's config: its services.yaml entry, enabled, ``options`` merged in, ``overrides`` set."""
        base = settings.services[self.service]
        return base.model_copy(update={"options": {**base.options, **self.options}, "enabled": True,
                                       **self.overrides})

    @cached_property
    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def start(self) -> Self:
        env = {**os.environ, **self.ctx.config.env, **self.ctx.launch_env(), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([self.python, "-m", self.ctx.config.module], env=env, cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @contextlib.contextmanager
    def running(self, *, readyz: bool = False) -> Iterator[Self]:
        """Started, then serving (gRPC health; ``/readyz`` if ``readyz``) for the block; stopped after it."""
        self.start()
        try:
            if readyz:
                self.wait_ready()
            else:
                self.wait_serving()
            yield self
        finally:
            self.stop()

    def health(self, service: str = "") -> int | None:
        """The gRPC health status, or None when the server does not answer."""
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return None
        return int(reply.status)

    def wait_serving(self, timeout: float = 300) -> Self:
        eventually(lambda: self.health() == SERVING, timeout, f"{self.name} gRPC health SERVING", self)
        return self

    def http_alive(self) -> bool:
        return self._http_ok("/livez")

    def ready(self) -> bool:
        return self._http_ok("/readyz")

    def wait_ready(self, timeout: float = 60) -> Self:
        eventually(self.ready, timeout, f"{self.name} /readyz", self)
        return self

    def call(self, method: str, request: Any, timeout: float | None = None, token: str | None = "",
             **kw: Any) -> Any:
        """A unary call with the internal token (``token=None``: without one; another string: that one)."""
        token = self.token if token == "" else token
        metadata = [("x-internal-token", token)] if token else []
        return self._unary(method)(request, metadata=metadata, timeout=self._timeout(timeout), **kw)

    def future(self, method: str, request: Any) -> Any:
        return self._unary(method).future(request, metadata=self.metadata, timeout=self.timeout)

    def server_stream(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """A server stream (iterate it; ``cancel()`` cancels the call)."""
        op = operation(self.role, method)
        stub = self.channel.unary_stream(op.grpc_path, request_serializer=op.request.SerializeToString,
                                         response_deserializer=op.response.FromString)
        return stub(request, metadata=self.metadata, timeout=self._timeout(timeout))

    def metric(self, name: str, **labels: str) -> float:
        """A sample from /metrics, with this service's ``service`` label added to ``labels``."""
        return self.sample(name, {"service": self.name, **labels})

    def sample(self, name: str, labels: dict[str, str]) -> float:
        """The sample of ``name`` with exactly ``labels`` from /metrics, 0.0 when there is none."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(f"{name}{{{want}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Close the clients, signal the service and wait; SIGKILL it if it outlives ``timeout``."""
        if "channel" in self.__dict__:
            self.channel.close()
        self.http.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def _unary(self, method: str) -> Any:
        op = operation(self.role, method)
        return self.channel.unary_unary(op.grpc_path, request_serializer=op.request.SerializeToString,
                                        response_deserializer=op.response.FromString)

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _http_ok(self, path: str) -> bool:
        try:
            return self.http.get(path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
