"""RunPod workers for tests: each role's worker venv (``<role>-runpod`` extra) and real worker processes.

The venv of a worker is built by the same VenvBuilder as main's services, from the same lock,
under the service name ``<role>-runpod`` (so it never replaces the local service's venv).
``RunpodWorker`` starts ``python -m services.<role>.runpod_worker`` with the runpod SDK's local
API server on 127.0.0.1 (``--rp_serve_api``) or, with ``api="production"``, our own server that
follows RunPod's production job API (``tests/helpers/runpod_api.py``) around the same handler.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.config import load_settings
from core.context import Paths
from core.managers.supervisor import VenvBuilder
from tests.helpers.service_process import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "rp-test-key-0123456789"


def worker_python(role: str) -> str:
    """Interpreter of the ``<role>-runpod`` venv (built from uv.lock on first use)."""
    cfg = load_settings(env={}).services[role]
    extra = {"stt": "stt-runpod", "tts": "tts-runpod", "llm": "llm-runpod"}[role]
    venv = asyncio.run(VenvBuilder(Paths.from_env()).ensure(cfg.model_copy(update={"name": extra, "extra": extra})))
    return str(venv / "bin" / "python")


@dataclass
class RunpodWorker:
    """One worker process serving ``role`` on 127.0.0.1:``port``; logs go to ``log_path``."""

    role: str
    log_path: Path
    api: str = "sdk"  # "sdk": the runpod SDK's --rp_serve_api; "production": tests/helpers/runpod_api.py
    cold_start_s: float = 0.0
    chunk_delay_s: float = 0.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/v2" if self.api == "production" else "")

    def start(self, env: dict[str, str] | None = None) -> RunpodWorker:
        python = worker_python(self.role)
        if self.api == "sdk":
            argv = [python, "-m", f"services.{self.role}.runpod_worker", "--rp_serve_api",
                    "--rp_api_host", "127.0.0.1", "--rp_api_port", str(self.port)]
        else:
            argv = [python, str(ROOT / "tests" / "helpers" / "runpod_api.py"), self.role, "--port", str(self.port),
                    "--api-key", KEY, "--cold-start-s", str(self.cold_start_s),
                    "--chunk-delay-s", str(self.chunk_delay_s)]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}  # stay local
        child_env.update({"UV_LOG_FORMAT": "text", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", **(env or {})})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until the worker's server answers (the model is loaded before the server starts)."""
        assert self.proc is not None
        t0 = time.monotonic()
        probe = f"http://127.0.0.1:{self.port}/" + ("openapi.json" if self.api == "sdk" else "ping")
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.role} worker exited ({self.proc.returncode}); log:\n{self.tail()}")
            try:
                if httpx.get(probe, timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.role} worker not ready after {timeout:.0f} s; log:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class OpenAIUpstream:
    """The LLM service standalone: an OpenAI-compatible ``/v1`` with ``KEY`` as its bearer token.

    It stands in for RunPod's vLLM worker behind its OpenAI route, which the ``runpod`` profile's
    LLM service (engine openai) proxies.
    """

    def __init__(self, log: Path) -> None:
        from tests.helpers.service_process import service_python

        self.port, self.log = free_port(), log
        env = {**os.environ, "UV_INTERNAL_TOKEN": KEY, "UV_LLM_HTTP_PORT": str(self.port),
               "UV_LLM_GRPC_PORT": str(free_port()), "UV_LOG_FORMAT": "text"}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen([service_python("llm"), "-m", "services.llm", "--standalone"], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model(self, timeout: float = 900) -> str:
        """The id it serves, once ``/v1/models`` answers (the model is loaded)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError("the upstream LLM exited:\n" + self.log.read_text()[-3000:])
            try:
                r = httpx.get(f"{self.base_url}/models", headers={"authorization": f"Bearer {KEY}"}, timeout=5,
                              trust_env=False)
                if r.status_code == 200:
                    return str(r.json()["data"][0]["id"])
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("the upstream LLM never served /v1/models:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


__all__ = ["KEY", "OpenAIUpstream", "RunpodWorker", "worker_python"]
