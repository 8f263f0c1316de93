"""What the supervisor reports about one service: for the control API, `sm list` and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.managers.supervisor.states import State


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    role: str
    state: State
    pid: int | None  # None when no process is alive
    host: str
    grpc_port: int  # the port of the current (or last) spawn; 0 before the first spawn of a port-0 service
    http_port: int
    restarts: int  # automatic restarts since main started (or since a start() out of FATAL)
    uptime_s: float | None  # seconds since the current process was spawned
    rss_bytes: int | None
    cpu_percent: float | None  # percent of one core since the previous status() call
    health_failures: int  # failed liveness probes in total (same reset rule as restarts)
    last_error: str  # why it last failed; "" when it has not
    venv: str  # the venv it runs from; "" when launched by a command override

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d
