"""The voice benchmark's own ``main.py``: a subprocess on a free port, its services on free ports.

Like ``tests/helpers/stack.py``: the bench's ``UV_VAR_DIR`` (wiped first, so the store and logs
are this run's only), the shared service venvs, JSON logs. :meth:`MainStack.log_tails` gives
main's output and every service log's tail for the failure report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class StackFailed(Exception):
    """Main did not come up (or died); the message says how far it got."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(var_dir: Path, port: int) -> dict[str, str]:
    """This process's env with main's var dir, port and free (0) service ports."""
    env = dict(os.environ)
    env.update(
        UV_VAR_DIR=str(var_dir),
        UV_VENVS_DIR=str(ROOT / ".venvs"),
        UV_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        PORT=str(port),
        **{f"UV_{svc}_{kind}_PORT": "0" for svc in ("STT", "TTS", "LLM") for kind in ("GRPC", "HTTP")},
    )
    return env


class MainStack:
    """``python main.py`` as a subprocess of the bench, in its own process group."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.env = stack_env(var_dir, self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/voice"
        self.stdout_path = var_dir / "main.stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.var_dir.exists():
            shutil.rmtree(self.var_dir)  # the bench's own folder: this run's store and logs only
        self.var_dir.mkdir(parents=True)
        with self.stdout_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "--log-format", "json"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    async def wait_healthy(self, within_s: float) -> dict[str, Any]:
        """Wait for ``/health`` to say ok (every service RUNNING); :class:`StackFailed` otherwise."""
        deadline = time.monotonic() + within_s
        last: Any = None
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = await http.get(f"{self.url}/health")
                    last = r.json()
                    if r.status_code == 200:
                        return dict(last)
                await asyncio.sleep(0.5)
        raise StackFailed(f"main not healthy after {within_s:.0f} s; last /health: {last}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackFailed(f"main exited with status {self.proc.returncode}")

    def stop(self, grace_s: float = 60) -> int | None:
        """SIGTERM (main stops its services), then SIGKILL of the whole group after ``grace_s``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def log_tails(self, lines: int = 60) -> str:
        """Main's stdout and each service log (var/log/*.log), last ``lines`` lines of each."""
        parts = []
        logs = [self.stdout_path, *sorted((self.var_dir / "log").glob("*.log"))]
        for path in logs:
            if not path.exists():
                continue
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"===== {path.relative_to(self.var_dir)} (last {lines} lines) =====\n" + "\n".join(text))
        return "\n\n".join(parts) or f"(no logs under {self.var_dir})"
