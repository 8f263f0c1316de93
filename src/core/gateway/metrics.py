"""Main's own Prometheus metrics: build info, alert thresholds, and the supervisor's view of services.

``install_main_metrics`` registers, in the process registry:

* ``ultravox_build_info{version, profile, stt_engine, tts_engine, llm_engine}`` = 1, and
  ``ultravox_alert_threshold{alert}`` from ``settings.monitoring`` (alert rules compare against
  these, so thresholds live in config, not in the rules);
* ``SupervisorCollector``, which reads the supervisor's live statuses at scrape time, so the
  numbers are never stale and nothing has to be pushed on every transition;
* a transition listener that counts service failures in ``ultravox_errors_total{source="supervisor"}``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator

import psutil
from fastapi import Request
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.config import Settings
from core.context import ProcessContext
from core.error_metrics import ErrorMetrics, error_metrics
from core.managers.remote import RemoteServices, RemoteState
from core.managers.supervisor import ServiceSupervisor, State

ROLES = ("stt", "tts", "llm")


def alert_thresholds(settings: Settings) -> dict[str, float]:
    """alert rule name -> the threshold it compares against (``ultravox_alert_threshold``)."""
    m = settings.monitoring
    return {"VoiceToVoiceP95High": m.voice_to_voice_p95_alert_s, "HighErrorRate": m.error_rate_alert_ratio}


def version() -> str:
    try:
        return importlib.metadata.version("ultravox-pipeline")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0+unknown"


def engines(settings: Settings) -> dict[str, str]:
    """role -> engine of the first enabled service of that role ("" when the profile has none)."""
    out = dict.fromkeys(ROLES, "")
    for svc in settings.enabled_services():
        if not out.get(svc.role):
            out[svc.role] = svc.engine
    return out


def install_main_metrics(
    ctx: ProcessContext, supervisor: ServiceSupervisor, remote: RemoteServices | None = None
) -> None:
    """Register main's build info, alert thresholds and supervisor metrics in ``ctx.registry``."""
    settings, registry = ctx.settings, ctx.registry
    eng = engines(settings)
    info = Gauge(
        "ultravox_build_info", "Always 1; the labels say which version, profile and engines this main runs.",
        ["version", "profile", "stt_engine", "tts_engine", "llm_engine"], registry=registry,
    )
    info.labels(version(), settings.profile.name, eng["stt"], eng["tts"], eng["llm"]).set(1)
    thresholds = Gauge(
        "ultravox_alert_threshold",
        "Threshold of each alert rule, from config monitoring (seconds for latency alerts, a ratio for rates).",
        ["alert"], registry=registry,
    )
    for alert, value in alert_thresholds(settings).items():
        thresholds.labels(alert).set(value)
    registry.register(SupervisorCollector(supervisor))
    if remote is not None and remote.names():
        registry.register(RemoteCollector(remote))
    supervisor.add_listener(FailureCounter(error_metrics(registry)))


def count_error(request: Request, code: str) -> None:
    """Count an error response of the gateway (``source="gateway"``) in the app's registry."""
    rt = getattr(request.app.state, "runtime", None)
    registry: CollectorRegistry | None = rt.ctx.registry if rt is not None else None
    if registry is not None:
        error_metrics(registry).count("gateway", code)


class FailureCounter:
    """Supervisor transition listener: one ``ultravox_errors_total{source="supervisor"}`` per failure."""

    def __init__(self, errors: ErrorMetrics) -> None:
        self._errors = errors

    def __call__(self, service: str, old: State, new: State, reason: str) -> None:
        kind = failure_type(old, new, reason)
        if kind:
            self._errors.count("supervisor", kind)


def failure_type(old: State, new: State, reason: str) -> str:
    """The error type of a transition, or "" when it is not a failure (see states.TRANSITIONS)."""
    if old == State.RUNNING and new == State.EXITED:
        return "" if reason == "exit code 0" else "EXITED"
    if old == State.STARTING and new in (State.BACKOFF, State.FATAL):
        return "STARTUP_FAILED"
    if old == State.STOPPING and new in (State.BACKOFF, State.FATAL):
        return "KILLED"  # the supervisor killed it: liveness failed or startup timed out
    if old == State.BACKOFF and new == State.FATAL:
        return "FLAPPING"
    return ""


def tree_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` and its descendants (reaped children included)."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            t = proc.cpu_times()
            total = float(t.user + t.system + t.children_user + t.children_system)
        for child in proc.children(recursive=True):
            try:
                ct = child.cpu_times()
            except psutil.Error:  # exited between the listing and the read
                continue
            total += float(ct.user + ct.system)
    except psutil.Error:
        return None
    return total


class RemoteCollector(Collector):
    """State, workers and jobs of every remote (RunPod) service, as its last /health probe saw them."""

    def __init__(self, remote: RemoteServices) -> None:
        self._remote = remote

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "ultravox_remote_state", "1 for the state each remote service is in now (REMOTE_READY, REMOTE_COLD, "
            "REMOTE_DOWN, REMOTE_UNKNOWN), 0 for the others.", labels=["service", "state", "endpoint"],
        )
        workers = GaugeMetricFamily(
            "ultravox_remote_workers", "Workers of each remote endpoint by RunPod's kind (idle, running, "
            "initializing...).", labels=["service", "kind"],
        )
        jobs = GaugeMetricFamily(
            "ultravox_remote_jobs", "Jobs of each remote endpoint by RunPod's kind (inQueue, inProgress...).",
            labels=["service", "kind"],
        )
        for st in self._remote.statuses():
            for s in RemoteState:
                state.add_metric([st.name, s.value, st.endpoint], 1.0 if s is st.state else 0.0)
            for kind, n in st.workers.items():
                workers.add_metric([st.name, kind], float(n))
            for kind, n in st.jobs.items():
                jobs.add_metric([st.name, kind], float(n))
        yield from (state, workers, jobs)


class SupervisorCollector(Collector):
    """State, restarts, health-check failures, RSS, CPU and uptime of every supervised service."""

    def __init__(self, supervisor: ServiceSupervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = GaugeMetricFamily(
            "ultravox_service_state", "1 for the state each service is in now, 0 for the others.",
            labels=["service", "state"],
        )
        up = GaugeMetricFamily(
            "ultravox_service_up", "1 when the service is RUNNING (model loaded, health SERVING), else 0.",
            labels=["service"],
        )
        restarts = CounterMetricFamily(
            "ultravox_service_restarts", "Automatic restarts of each service since main started.",
            labels=["service"],
        )
        health = CounterMetricFamily(
            "ultravox_service_health_check_failures", "Failed liveness probes of each service.", labels=["service"]
        )
        rss = GaugeMetricFamily(
            "ultravox_service_resident_memory_bytes", "Resident memory of each service process; 0 when not alive.",
            labels=["service"],
        )
        cpu = GaugeMetricFamily(
            "ultravox_service_cpu_percent",
            "CPU use of each service process since the previous status read, percent of one core.",
            labels=["service"],
        )
        cpu_seconds = CounterMetricFamily(
            "ultravox_service_cpu_seconds",
            "User+system CPU seconds of each service's process tree since it was spawned (resets on restart).",
            labels=["service"],
        )
        uptime = GaugeMetricFamily(
            "ultravox_service_uptime_seconds", "Seconds since the service process was spawned; 0 when not alive.",
            labels=["service"],
        )
        for st in self._sup.statuses():
            for s in State:
                state.add_metric([st.name, s.value], 1.0 if st.state == s else 0.0)
            up.add_metric([st.name], 1.0 if st.state == State.RUNNING else 0.0)
            restarts.add_metric([st.name], float(st.restarts))
            health.add_metric([st.name], float(st.health_failures))
            rss.add_metric([st.name], float(st.rss_bytes or 0))
            cpu.add_metric([st.name], float(st.cpu_percent or 0.0))
            secs = tree_cpu_seconds(st.pid) if st.pid is not None else None
            cpu_seconds.add_metric([st.name], secs or 0.0)
            uptime.add_metric([st.name], float(st.uptime_s or 0.0))
        yield from (state, up, restarts, health, rss, cpu, cpu_seconds, uptime)
