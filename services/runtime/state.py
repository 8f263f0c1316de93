"""Where a service is in its life: starting, loading, ready, failed or draining.

Liveness is "the process answers"; readiness is "the model is loaded and we are not draining".
The HTTP probes and the operation gate both read this one object.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Phase(enum.Enum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(slots=True)
class ServiceState:
    """Mutated only on the event loop; read by probes and the dispatcher."""

    service: str
    phase: Phase = Phase.STARTING
    load_started: float = 0.0
    load_time_s: float = 0.0
    error: str = ""
    since: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def loading(self) -> None:
        self.phase, self.load_started, self.since = Phase.LOADING, time.monotonic(), time.monotonic()

    def loaded(self, seconds: float) -> None:
        self.phase, self.load_time_s, self.since = Phase.READY, seconds, time.monotonic()

    def failed(self, error: str) -> None:
        self.phase, self.error, self.since = Phase.FAILED, error, time.monotonic()

    def draining(self) -> None:
        self.phase, self.since = Phase.DRAINING, time.monotonic()

    def reason(self) -> str:
        """Why the service is not ready, phrased for an operator."""
        if self.phase is Phase.READY:
            return f"service {self.service!r} is ready (model loaded in {self.load_time_s:.2f} s)"
        if self.phase is Phase.LOADING:
            waited = time.monotonic() - self.load_started
            return (
                f"service {self.service!r} is loading its model ({waited:.1f} s so far); "
                "retry when /readyz returns 200 or gRPC health reports SERVING"
            )
        if self.phase is Phase.FAILED:
            return f"service {self.service!r} failed to load its model: {self.error}"
        if self.phase is Phase.DRAINING:
            return f"service {self.service!r} is shutting down; send the call to a running instance"
        return f"service {self.service!r} is starting its servers"
