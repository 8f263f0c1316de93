"""vLLM for the gpu-machine profile: its OpenAI server as a child process, spoken to over HTTP.

``load`` starts ``python -m vllm.entrypoints.openai.api_server`` on a free loopback port, under
``vllm_child`` in a process group of its own (killed with the LLM service, even by SIGKILL),
with a per-run API key in ``VLLM_API_KEY``; waits for ``/health``; then hands every call to
:class:`OpenAICompatEngine`. Its output goes to ``<paths.logs>/<service>.vllm.log``, whose
tail is in the error when the server dies during startup.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Sequence

import httpx

from core.config import ServiceConfig
from core.context import Paths
from services.llm.engine import Finish, Message, ModelInfo, ModelLoadError, Sampling
from services.llm.openai_engine import OpenAICompatEngine
from services.llm.options import LlmOptions

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
POLL_S = 1.0
STOP_GRACE_S = 15.0
TAIL_BYTES = 4000


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def vllm_command(python: str, module: str, model: str, port: int, options: LlmOptions) -> list[str]:
    """The api_server command line for ``model`` on 127.0.0.1:``port``."""
    cmd = [
        python, "-m", module, "--model", model, "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}", "--dtype", options.dtype,
        "--tensor-parallel-size", str(options.tensor_parallel_size),
    ]
    if options.max_model_len:
        cmd += ["--max-model-len", str(options.max_model_len)]
    return cmd + list(options.vllm_args)


class VllmEngine:
    """A vLLM OpenAI server we own, plus the OpenAI-compatible engine that talks to it."""

    def __init__(
        self, cfg: ServiceConfig, options: LlmOptions, paths: Paths, *, python: str = sys.executable,
        module: str = SERVER_MODULE,
    ) -> None:
        self.cfg, self.options, self.paths = cfg, options, paths
        self.python, self.module = python, module
        self.log_path = paths.logs / f"{cfg.name}.vllm.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._inner: OpenAICompatEngine | None = None

    def command(self, port: int) -> list[str]:
        return vllm_command(self.python, self.module, self.cfg.model, port, self.options)

    def load(self) -> None:
        self.port = free_port()
        key = secrets.token_urlsafe(24)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        watcher = [self.python, "-m", "services.llm.vllm_child", str(os.getpid()), "--", *self.command(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                watcher, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "VLLM_API_KEY": key},
            )
        try:
            self._wait_healthy(time.monotonic() + self.options.startup_timeout_s)
            inner = OpenAICompatEngine(
                self.cfg, self.options, self.paths, base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key
            )
            inner.owned_by = "vllm"
            inner.load()
        except BaseException:
            self.stop_server()
            raise
        self._inner = inner

    def _wait_healthy(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                raise ModelLoadError(
                    f"vLLM exited with code {rc} while loading {self.cfg.model!r}; last output "
                    f"({self.log_path}):\n{self._tail()}"
                )
            try:
                if httpx.get(url, timeout=POLL_S).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ModelLoadError(
                    f"vLLM did not become healthy within {self.options.startup_timeout_s:g}s "
                    f"(options.startup_timeout_s); last output ({self.log_path}):\n{self._tail()}"
                )
            time.sleep(POLL_S)

    def _tail(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - TAIL_BYTES))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop_server(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after a grace period."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def info(self) -> ModelInfo:
        if self._inner is None:
            return ModelInfo(id=self.cfg.model, context_length=self.options.max_model_len, owned_by="vllm")
        return self._inner.info()

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return None

    def generate(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event
    ) -> AsyncGenerator[str | Finish, None]:
        if self._inner is None:
            raise RuntimeError("VllmEngine used before load()")
        return self._inner.generate(messages, sampling, cancel)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        self.stop_server()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
