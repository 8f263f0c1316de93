"""The real STT service as a subprocess, launched the way main launches it (UV_LAUNCH_SPEC).

``SttProcess`` builds a ServiceContext for free loopback ports, starts ``<python> -m services.stt``
with its stderr in a log file, and offers the clients a test needs: a gRPC channel with generic
calls from the catalog, an HTTP client, and health checks. ``log_text()`` is what a failing test
prints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from core.wire import operation

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(pred: Callable[[], Any], timeout: float, what: str, proc: SttProcess | None = None) -> Any:
    """Poll ``pred`` until it returns something truthy; fail with the service log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"service exited ({proc.proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class SttProcess:
    python: str
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    parent_pid: int | None = field(default_factory=os.getpid)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"stt-{self.grpc_port}.log"
        settings = load_settings(env={})
        base = settings.services["stt"]
        cfg = base.model_copy(update={"options": {**base.options, **self.options}, **self.overrides})
        settings = settings.model_copy(update={"services": {**settings.services, "stt": cfg}})
        cache = self.cache or Paths.from_env().cache
        paths = Paths(root=ROOT, var=self.workdir / "var", cache=cache, venvs=ROOT / ".venvs")
        g = GlobalContext.create(settings, paths)
        self.ctx = ServiceContext(
            ProcessContext(global_=g, name="stt"),
            cfg,
            self.grpc_port,
            self.http_port,
            parent_pid=self.parent_pid,
        )
        self.token = self.ctx.token
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=120)

    def start(self) -> SttProcess:
        env = {**os.environ, **self.ctx.config.env, **self.ctx.launch_env(), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "services.stt"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def health(self, service: str = "") -> int | None:
        """The gRPC health status, or None when the server does not answer."""
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return None
        return int(reply.status)

    def http_alive(self) -> bool:
        try:
            return self.http.get("/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_serving(self, timeout: float = 300) -> SttProcess:
        eventually(lambda: self.health() == SERVING, timeout, "gRPC health SERVING", self)
        return self

    def call(self, method: str, request: Any, token: str | None = "", **kw: Any) -> Any:
        op = operation("stt", method)
        stub = self.channel.unary_unary(
            op.grpc_path,
            request_serializer=op.request.SerializeToString,
            response_deserializer=op.response.FromString,
        )
        token = self.token if token == "" else token
        metadata = [("x-internal-token", token)] if token else []
        return stub(request, metadata=metadata, timeout=kw.pop("timeout", 120), **kw)

    def future(self, method: str, request: Any) -> Any:
        op = operation("stt", method)
        stub = self.channel.unary_unary(
            op.grpc_path,
            request_serializer=op.request.SerializeToString,
            response_deserializer=op.response.FromString,
        )
        return stub.future(request, metadata=[("x-internal-token", self.token)], timeout=120)

    def metric(self, name: str, **labels: str) -> float:
        text = self.http.get("/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in sorted({"service": "stt", **labels}.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the service and wait; SIGKILL it if it outlives ``timeout``."""
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
