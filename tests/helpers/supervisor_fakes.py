"""Fakes for the supervisor's seams (ProcessAPI, HealthProber) and a one-service Settings builder.

A ``FakeProcess`` is driven by the test: ``crash(rc)`` ends it, ``hang()`` makes probes time
out (as SIGSTOP does), ``health`` sets what the probe answers. Signals behave like a
well-behaved service unless ``ignore_sigterm`` is set.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.config import ProfileConfig, ServiceConfig, Settings
from core.context import LAUNCH_SPEC_ENV, GlobalContext, Paths, ProcessContext
from core.managers.supervisor import HealthResult, HealthStatus, ProcStats, SpawnSpec


class FakeProcess:
    def __init__(self, pid: int, spec: SpawnSpec, on_output: Callable[[str], None]) -> None:
        self.pid = pid
        self.spec = spec
        self.on_output = on_output
        launch = json.loads(spec.env[LAUNCH_SPEC_ENV])
        self.grpc_port: int = launch["grpc_port"]
        self.http_port: int = launch["http_port"]
        self.health = HealthStatus.SERVING
        self.hung = False
        self.ignore_sigterm = False
        self.signals: list[int] = []
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    @property
    def alive(self) -> bool:
        return not self._exited.done()

    def crash(self, rc: int = 1) -> None:
        if not self._exited.done():
            self._exited.set_result(rc)

    def hang(self) -> None:
        self.hung = True

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def signal_group(self, sig: int) -> bool:
        self.signals.append(sig)
        if not self.alive:
            return False
        if sig == signal.SIGKILL:
            self.crash(-signal.SIGKILL)
        elif sig == signal.SIGTERM and not self.ignore_sigterm and not self.hung:
            asyncio.get_running_loop().call_soon(self.crash, 0)
        elif sig == signal.SIGCONT and self.hung and not self.ignore_sigterm:
            # continued: a stopped process now acts on the SIGTERM it got while stopped
            if signal.SIGTERM not in self.signals:
                return True
            self.hung = False
            asyncio.get_running_loop().call_soon(self.crash, 0)
        return True

    def stats(self) -> ProcStats | None:
        return ProcStats(rss_bytes=4096, cpu_percent=1.5) if self.alive else None


class FakeProcessAPI:
    """Records spawns; ``on_spawn`` scripts each new process (e.g. crash it at once)."""

    def __init__(self) -> None:
        self.procs: list[FakeProcess] = []
        self.busy_ports: set[int] = set()
        self.spawn_error: OSError | None = None
        self.on_spawn: Callable[[FakeProcess], None] | None = None
        self._next_pid = 1000
        self._next_port = 41000

    async def spawn(self, spec: SpawnSpec, on_output: Callable[[str], None]) -> FakeProcess:
        if self.spawn_error is not None:
            raise self.spawn_error
        self._next_pid += 1
        p = FakeProcess(self._next_pid, spec, on_output)
        self.procs.append(p)
        on_output(f"fake service pid {p.pid} booting")
        if self.on_spawn is not None:
            self.on_spawn(p)
        return p

    def port_available(self, host: str, port: int) -> bool:
        return port not in self.busy_ports

    def free_port(self, host: str) -> int:
        self._next_port += 1
        return self._next_port

    @property
    def last(self) -> FakeProcess:
        return self.procs[-1]

    def on_port(self, port: int) -> FakeProcess | None:
        for p in reversed(self.procs):
            if p.grpc_port == port and p.alive:
                return p
        return None


class FakeProber:
    """Answers for whichever live FakeProcess holds the port."""

    def __init__(self, api: FakeProcessAPI) -> None:
        self.api = api
        self.forgotten: list[int] = []
        self.closed = False
        self.probes = 0

    async def probe(self, host: str, port: int, timeout_s: float) -> HealthResult:
        self.probes += 1
        p = self.api.on_port(port)
        if p is None:
            return HealthResult(HealthStatus.UNREACHABLE, "connection refused")
        if p.hung:
            await asyncio.sleep(timeout_s)
            return HealthResult(HealthStatus.TIMEOUT, f"no answer within {timeout_s}s")
        return HealthResult(p.health)

    async def forget(self, host: str, port: int) -> None:
        self.forgotten.append(port)

    async def close(self) -> None:
        self.closed = True


class FakeClock:
    """Monotonic time the test can push forward; otherwise follows the real clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


FAST_POLICY: dict[str, Any] = {
    "stop_grace_s": 0.5,
    "health": {"period_s": 0.05, "timeout_s": 0.05, "failure_threshold": 3, "startup_timeout_s": 5},
    "restart": {
        "policy": "on-failure", "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "jitter": 0.2,
        "flapping_window_s": 60, "flapping_max_restarts": 3, "reset_after_s": 60,
    },
}


def service_config(name: str = "svc", **over: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "name": name, "role": "stt", "extra": "stt", "module": "services.stt", "engine": "fake",
        "model": "none", "grpc_port": 0, "http_port": 0, **FAST_POLICY,
    }
    return ServiceConfig.model_validate(_merge(base, over))


def make_settings(*configs: ServiceConfig) -> Settings:
    profile = ProfileConfig(name="test")
    return Settings(
        profile=profile, profiles={"test": profile}, services={c.name: c for c in configs},
        config_dir="/nonexistent",
    )


def make_ctx(tmp: Path, *configs: ServiceConfig, root: Path | None = None) -> ProcessContext:
    paths = Paths(root=root or tmp / "root", var=tmp / "var", cache=tmp / "cache", venvs=tmp / "venvs")
    g = GlobalContext.create(make_settings(*configs), paths, internal_token="test-token")
    return ProcessContext(global_=g, name="main")


async def eventually(
    cond: Callable[[], bool | Awaitable[bool]], within_s: float = 10.0, what: str = ""
) -> None:
    """Poll ``cond`` until true; a generous bound, never a timing assertion."""
    deadline = time.monotonic() + within_s
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what or cond}")
        await asyncio.sleep(0.01)
