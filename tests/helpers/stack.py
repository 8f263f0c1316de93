"""Run the real main process (or its config) in tests: free ports, temp config, log dumps on failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config_dir(dest: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Copy config/ (agents included) to ``dest``, optionally editing services.yaml's parsed document."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "profiles.yaml", dest / "profiles.yaml")
    shutil.copytree(ROOT / "config" / "agents", dest / "agents", dirs_exist_ok=True)
    doc = yaml.safe_load((ROOT / "config" / "services.yaml").read_text())
    if edit:
        edit(doc)
    (dest / "services.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def stack_env(var_dir: Path, config_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Env for a main under test: its own var dir, free service ports, the shared venvs."""
    env = dict(os.environ)
    env.update(
        UV_VAR_DIR=str(var_dir),
        UV_VENVS_DIR=str(ROOT / ".venvs"),
        **{f"UV_{svc}_{kind}_PORT": "0" for svc in ("STT", "TTS", "LLM") for kind in ("GRPC", "HTTP")},
        UV_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    if config_dir:
        env["UV_CONFIG_DIR"] = str(config_dir)
    env.update(extra)
    return env


def dump_logs(var_dir: Path, label: str = "") -> None:
    """Print every service log under ``var_dir`` and keep a copy for CI artifacts."""
    keep = Path(os.environ.get("UV_TEST_LOG_DIR", ROOT / "var" / "test-logs"))
    keep.mkdir(parents=True, exist_ok=True)
    for log in sorted((var_dir / "log").glob("*.log*")):
        text = log.read_text(errors="replace")
        print(f"\n===== {label} {log.name} (last 80 lines) =====\n" + "\n".join(text.splitlines()[-80:]))
        shutil.copy(log, keep / f"{label or 'run'}-{log.name}")


class MainProcess:
    """``python main.py`` as a real subprocess on a free port."""

    def __init__(self, var_dir: Path, env: dict[str, str], *, cmd: list[str] | None = None) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = cmd or [PY, str(ROOT / "main.py"), "--log-format", "json"]
        self.proc: subprocess.Popen[bytes] | None = None
        var_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = var_dir / "main.stdout.log"

    def start(self) -> MainProcess:
        out = self.stdout_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_healthy(self, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"main exited with {self.proc.returncode}:\n{self.main_log()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.url}/health", timeout=2)
                last = r.json()
                if r.status_code == 200:
                    return dict(last)
            time.sleep(0.3)
        raise AssertionError(f"main not healthy after {timeout}s; last /health: {last}\n{self.main_log()}")

    def main_log(self) -> str:
        return self.stdout_path.read_text(errors="replace")[-6000:] if self.stdout_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@contextlib.contextmanager
def running_main(var_dir: Path, env: dict[str, str], label: str, timeout: float = 600) -> Iterator[MainProcess]:
    m = MainProcess(var_dir, env).start()
    ok = False
    try:
        m.wait_healthy(timeout)
        yield m
        ok = True
    finally:
        m.stop()
        if not ok:
            print(f"\n===== {label} main stdout =====\n{m.main_log()}")
            dump_logs(var_dir, label)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as dead
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
