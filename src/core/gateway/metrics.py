"""Prometheus view of the supervisor: state, restarts, RSS, CPU and uptime per service.

A custom collector reads the supervisor's live statuses at scrape time, so the numbers are
never stale and nothing has to be pushed on every transition.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.managers.supervisor import ServiceSupervisor, State


class SupervisorCollector(Collector):
    def __init__(self, supervisor: ServiceSupervisor, profile: str, version: str) -> None:
        self._sup, self._profile, self._version = supervisor, profile, version

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        info = GaugeMetricFamily(
            "ultravox_build_info", "Build and profile of this main process.", labels=["version", "profile"]
        )
        info.add_metric([self._version, self._profile], 1.0)
        yield info
        state = GaugeMetricFamily(
            "ultravox_service_state", "1 for the state each service is in now.", labels=["service", "state"]
        )
        up = GaugeMetricFamily(
            "ultravox_service_up", "1 when the service is RUNNING (model loaded).", labels=["service"]
        )
        restarts = CounterMetricFamily(
            "ultravox_service_restarts", "Restarts of each service since main started.", labels=["service"]
        )
        health = CounterMetricFamily(
            "ultravox_service_health_check_failures", "Failed liveness probes per service.", labels=["service"]
        )
        rss = GaugeMetricFamily("ultravox_service_resident_memory_bytes", "RSS of each service.", labels=["service"])
        cpu = GaugeMetricFamily(
            "ultravox_service_cpu_percent", "CPU use of each service, percent of one core.", labels=["service"]
        )
        uptime = GaugeMetricFamily(
            "ultravox_service_uptime_seconds", "Seconds since the service was spawned.", labels=["service"]
        )
        for st in self._sup.statuses():
            for s in State:
                state.add_metric([st.name, s.value], 1.0 if st.state == s else 0.0)
            up.add_metric([st.name], 1.0 if st.state == State.RUNNING else 0.0)
            restarts.add_metric([st.name], float(st.restarts))
            health.add_metric([st.name], float(st.health_failures))
            rss.add_metric([st.name], float(st.rss_bytes or 0))
            cpu.add_metric([st.name], float(st.cpu_percent or 0.0))
            uptime.add_metric([st.name], float(st.uptime_s or 0.0))
        yield from (state, up, restarts, health, rss, cpu, uptime)
