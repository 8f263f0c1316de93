"""Main's own metrics and the http_sd endpoint, on a fake supervisor (the real one: integration tests).

The fake stands in for ``ServiceSupervisor.statuses()`` / ``add_listener`` only; what is under
test is what main derives from them: build info from the profile's engines, alert thresholds
from config, failure counting from transitions, and the target groups Prometheus discovers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from core.config import load_settings
from core.config.models import MonitoringConfig
from core.context import GlobalContext, Paths, ProcessContext
from core.gateway.metrics import failure_type, install_main_metrics, tree_cpu_seconds
from core.gateway.routes import monitoring
from core.gateway.runtime import MainRuntime
from core.managers.remote import RemoteServices
from core.managers.supervisor import ServiceStatus, State
from core.managers.supervisor.runner import TransitionListener

ROOT = Path(__file__).resolve().parents[2]


def status(name: str, role: str, *, pid: int | None, http_port: int, host: str = "127.0.0.1",
           state: State = State.RUNNING, restarts: int = 0) -> ServiceStatus:
    return ServiceStatus(
        name=name, role=role, state=state, pid=pid, host=host, grpc_port=http_port + 1, http_port=http_port,
        restarts=restarts, uptime_s=12.5 if pid else None, rss_bytes=1000 if pid else None,
        cpu_percent=3.0 if pid else None, health_failures=0, last_error="", venv="",
    )


class FakeSupervisor:
    def __init__(self, statuses: list[ServiceStatus]) -> None:
        self.list = statuses
        self.listeners: list[TransitionListener] = []

    def statuses(self) -> list[ServiceStatus]:
        return list(self.list)

    def add_listener(self, cb: TransitionListener) -> None:
        self.listeners.append(cb)


def context(tmp_path: Path, **monitoring_conf: Any) -> ProcessContext:
    settings = load_settings(ROOT / "config", env={})
    if monitoring_conf:
        settings = settings.model_copy(update={"monitoring": MonitoringConfig(**monitoring_conf)})
    paths = Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    return ProcessContext(global_=GlobalContext.create(settings, paths), name="main")


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_build_info_names_the_profile_engines(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    install_main_metrics(ctx, FakeSupervisor([]))  # type: ignore[arg-type]
    s = ctx.settings
    by_role = {r: next(c.engine for c in s.enabled_services() if c.role == r) for r in ("stt", "tts", "llm")}
    families = {m.name: m for m in ctx.registry.collect()}
    (info,) = families["ultravox_build_info"].samples
    assert info.value == 1
    assert info.labels["profile"] == s.profile.name
    assert info.labels["version"]
    assert {k: info.labels[f"{k}_engine"] for k in by_role} == by_role


def test_alert_thresholds_come_from_config(tmp_path: Path) -> None:
    ctx = context(tmp_path, voice_to_voice_p95_alert_s=2.25, error_rate_alert_ratio=0.1)
    install_main_metrics(ctx, FakeSupervisor([]))  # type: ignore[arg-type]
    assert sample(ctx.registry, "ultravox_alert_threshold", alert="VoiceToVoiceP95High") == 2.25
    assert sample(ctx.registry, "ultravox_alert_threshold", alert="HighErrorRate") == 0.1


def test_supervisor_failures_are_counted_by_type(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    sup = FakeSupervisor([])
    install_main_metrics(ctx, sup)  # type: ignore[arg-type]
    (listener,) = sup.listeners
    assert sample(ctx.registry, "ultravox_errors_total", source="supervisor", type="EXITED") == 0
    listener("stt", State.RUNNING, State.EXITED, "killed by SIGKILL")
    listener("stt", State.RUNNING, State.EXITED, "exit code 0")  # a clean exit is no error
    listener("stt", State.EXITED, State.BACKOFF, "restart policy on-failure")  # same failure, not twice
    listener("llm", State.BACKOFF, State.FATAL, "flapping")
    assert sample(ctx.registry, "ultravox_errors_total", source="supervisor", type="EXITED") == 1
    assert sample(ctx.registry, "ultravox_errors_total", source="supervisor", type="FLAPPING") == 1


@pytest.mark.parametrize(("old", "new", "reason", "kind"), [
    (State.STARTING, State.BACKOFF, "exit code 3 during startup", "STARTUP_FAILED"),
    (State.STARTING, State.FATAL, "cannot spawn", "STARTUP_FAILED"),
    (State.STOPPING, State.BACKOFF, "killed (killed by SIGKILL); restart scheduled", "KILLED"),
    (State.STOPPING, State.STOPPED, "stopped", ""),
    (State.STARTING, State.RUNNING, "gRPC health is SERVING", ""),
])
def test_failure_type_of_transitions(old: State, new: State, reason: str, kind: str) -> None:
    assert failure_type(old, new, reason) == kind


def test_supervisor_collector_reports_every_service(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    sup = FakeSupervisor([
        status("stt", "stt", pid=os.getpid(), http_port=5001, restarts=2),
        status("tts", "tts", pid=None, http_port=5003, state=State.BACKOFF),
    ])
    install_main_metrics(ctx, sup)  # type: ignore[arg-type]
    reg = ctx.registry
    assert sample(reg, "ultravox_service_up", service="stt") == 1
    assert sample(reg, "ultravox_service_up", service="tts") == 0
    assert sample(reg, "ultravox_service_state", service="tts", state="BACKOFF") == 1
    assert sample(reg, "ultravox_service_restarts_total", service="stt") == 2
    assert (sample(reg, "ultravox_service_cpu_seconds_total", service="stt") or 0) > 0  # this test's own CPU
    assert sample(reg, "ultravox_service_cpu_seconds_total", service="tts") == 0


def test_tree_cpu_seconds_of_a_gone_process_is_none() -> None:
    assert tree_cpu_seconds(2**22 + 12345) is None


def runtime(tmp_path: Path, statuses: list[ServiceStatus]) -> MainRuntime:
    ctx = context(tmp_path)
    return MainRuntime(ctx=ctx, supervisor=FakeSupervisor(statuses), hub=None,  # type: ignore[arg-type]
                       remote=RemoteServices(ctx))


async def test_targets_list_main_and_live_services(tmp_path: Path) -> None:
    rt = runtime(tmp_path, [
        status("stt", "stt", pid=101, http_port=41001),
        status("tts", "tts", pid=None, http_port=41003, state=State.BACKOFF),  # dead: not scraped
        status("llm", "llm", pid=103, http_port=0, state=State.STARTING),  # no port yet
        status("llm2", "llm", pid=104, http_port=41005, host="0.0.0.0"),  # wildcard: main's address
    ])
    app = FastAPI()
    app.include_router(monitoring.router)
    app.state.runtime = rt
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8123") as client:
        r = await client.get("/api/monitoring/targets")
    await rt.proxy_client.aclose()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    profile = rt.ctx.settings.profile.name
    assert r.json() == [
        {"targets": ["127.0.0.1:8123"], "labels": {"component": "main", "role": "gateway", "profile": profile}},
        {"targets": ["127.0.0.1:41001"], "labels": {"component": "stt", "role": "stt", "profile": profile}},
        {"targets": ["127.0.0.1:41005"], "labels": {"component": "llm2", "role": "llm", "profile": profile}},
    ]


async def test_ipv6_targets_are_bracketed(tmp_path: Path) -> None:
    rt = runtime(tmp_path, [status("stt", "stt", pid=1, http_port=9, host="::1")])
    groups = monitoring.target_groups(rt, "::1", 8080)
    await rt.proxy_client.aclose()
    assert [g["targets"] for g in groups] == [["[::1]:8080"], ["[::1]:9"]]
