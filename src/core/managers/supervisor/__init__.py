"""ServiceSupervisor: spawns each model service in its own venv and keeps it healthy.

    states.py      State enum and the labelled transition table
    backoff.py     backoff, jitter and flapping arithmetic (pure)
    process.py     the one class that touches the OS (Popen, signals, waitpid, prctl, psutil)
    health.py      grpc.health.v1 probe with a typed result
    venv.py        uv venvs keyed by a hash of their requirements
    logs.py        per-service rotating log file
    runner.py      one service's state machine
    supervisor.py  the facade main uses
"""

from core.managers.supervisor.health import GrpcHealthProber, HealthProber, HealthResult, HealthStatus
from core.managers.supervisor.process import PosixProcessAPI, ProcessAPI, ProcessHandle, ProcStats, SpawnSpec
from core.managers.supervisor.states import TRANSITIONS, IllegalTransition, State
from core.managers.supervisor.status import ServiceStatus
from core.managers.supervisor.supervisor import CommandFactory, ServiceSupervisor
from core.managers.supervisor.venv import VenvBuilder

__all__ = [
    "TRANSITIONS",
    "CommandFactory",
    "GrpcHealthProber",
    "HealthProber",
    "HealthResult",
    "HealthStatus",
    "IllegalTransition",
    "PosixProcessAPI",
    "ProcStats",
    "ProcessAPI",
    "ProcessHandle",
    "ServiceStatus",
    "ServiceSupervisor",
    "SpawnSpec",
    "State",
    "VenvBuilder",
]
