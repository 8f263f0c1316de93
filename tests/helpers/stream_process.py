"""The scripted streaming service (``tests.helpers.stream_service``) as a real subprocess.

Launched the way main launches a service (``UV_LAUNCH_SPEC``), on free loopback ports, with the
test interpreter (the main venv has the runtime's dependencies). ``endpoint()`` is what the
hub's resolver returns for it; ``metric()`` reads its /metrics; ``log_text()`` is what a
failing test prints.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from core.managers.endpoint import Endpoint
from tests.helpers.stt_process import ROOT, eventually, free_port

NAME = "scripted-llm"
MODULE = "tests.helpers.stream_service"


@dataclass
class StreamServiceProcess:
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{NAME}-{self.grpc_port}.log"
        settings = load_settings(env={})
        cfg = settings.services["stt"].model_copy(update={
            "name": NAME, "role": "llm", "module": MODULE, "engine": "scripted", "model": "scripted",
            "options": self.options, "enabled": True, "stop_grace_s": self.stop_grace_s, "env": {},
        })
        settings = settings.model_copy(update={"services": {**settings.services, NAME: cfg}})
        paths = Paths(root=ROOT, var=self.workdir / "var", cache=Paths.from_env().cache, venvs=ROOT / ".venvs")
        g = GlobalContext.create(settings, paths)
        self.ctx = ServiceContext(ProcessContext(global_=g, name=NAME), cfg, self.grpc_port, self.http_port,
                                  parent_pid=os.getpid())
        self.token = self.ctx.token
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)

    def endpoint(self, **changes: Any) -> Endpoint:
        ep = Endpoint(NAME, "llm", "127.0.0.1", self.grpc_port, self.http_port, self.token)
        return dataclasses.replace(ep, **changes)

    def start(self) -> StreamServiceProcess:
        env = {**os.environ, **self.ctx.launch_env(), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULE], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> StreamServiceProcess:
        eventually(self.ready, timeout, f"{NAME} /readyz", None)
        return self

    def metric(self, name: str, **labels: str) -> float:
        text = self.http.get("/metrics").text
        want = {"service": NAME, **labels} if not name.startswith("uv_test_") else labels
        key = ",".join(f'{k}="{v}"' for k, v in sorted(want.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{{key}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
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
