"""Service states and the one table of legal transitions between them (supervisord semantics).

Every edge carries a comment that says when it is taken. ``check_transition`` is the only
gate: the state machine calls it before every change, so a bug that tries an edge not in the
table fails loudly instead of leaving a service in a state nobody planned for.
"""

from __future__ import annotations

from enum import StrEnum

from core.errors import SupervisorError


class State(StrEnum):
    STOPPED = "STOPPED"  # not running, and not meant to be
    STARTING = "STARTING"  # spawned (or about to be); not yet SERVING
    RUNNING = "RUNNING"  # gRPC health said SERVING; liveness probes are running
    BACKOFF = "BACKOFF"  # failed; waiting out the backoff delay before the next start
    STOPPING = "STOPPING"  # SIGTERM sent to the process group; waiting for it to exit
    EXITED = "EXITED"  # exited on its own from RUNNING
    FATAL = "FATAL"  # could not be started or kept running; no automatic retry
    DRAINING = "DRAINING"  # replaced by a new instance (a profile switch): finishing its calls, then exits


TRANSITIONS: dict[tuple[State, State], str] = {
    # STOPPED -> STARTING when start() is called (operator, start_all, or restart()).
    (State.STOPPED, State.STARTING): "start requested",
    # STARTING -> RUNNING when the gRPC health Check first returns SERVING.
    (State.STARTING, State.RUNNING): "health SERVING",
    # STARTING -> BACKOFF when the process exits before it is SERVING and the policy allows a retry.
    (State.STARTING, State.BACKOFF): "exited during startup",
    # STARTING -> STOPPING on stop() during startup, or to kill a start that overran startup_timeout_s.
    (State.STARTING, State.STOPPING): "stop requested or startup timed out",
    # STARTING -> FATAL when it cannot be spawned at all (port in use, no venv, exec failed),
    # or it exits during startup under restart policy "never".
    (State.STARTING, State.FATAL): "cannot spawn, or failed start with policy never",
    # RUNNING -> STOPPING on stop(), or to kill a service that failed failure_threshold probes.
    (State.RUNNING, State.STOPPING): "stop requested or liveness failed",
    # RUNNING -> EXITED when the process exits without being asked to (crash, kill -9, exit).
    (State.RUNNING, State.EXITED): "exited unexpectedly",
    # BACKOFF -> STARTING when the backoff delay has elapsed: the next attempt is spawned.
    (State.BACKOFF, State.STARTING): "backoff elapsed",
    # BACKOFF -> FATAL when the restart would exceed flapping_max_restarts within flapping_window_s.
    (State.BACKOFF, State.FATAL): "flapping",
    # BACKOFF -> STOPPED on stop() while waiting: the pending restart is cancelled.
    (State.BACKOFF, State.STOPPED): "stop requested during backoff",
    # STOPPING -> STOPPED when the process group is gone after a requested stop.
    (State.STOPPING, State.STOPPED): "stopped",
    # STOPPING -> BACKOFF when the supervisor killed it (liveness or startup timeout) and will retry.
    (State.STOPPING, State.BACKOFF): "killed by the supervisor; restart scheduled",
    # STOPPING -> FATAL when the supervisor killed it and restart policy "never" forbids a retry.
    (State.STOPPING, State.FATAL): "killed by the supervisor; policy never",
    # EXITED -> BACKOFF when the restart policy (always, or on-failure with a failure) says restart.
    (State.EXITED, State.BACKOFF): "restart policy",
    # EXITED -> STARTING on an explicit start() after an exit that was not restarted.
    (State.EXITED, State.STARTING): "start requested",
    # EXITED -> STOPPED on stop(): the operator acknowledges the exit.
    (State.EXITED, State.STOPPED): "stop requested",
    # FATAL -> STARTING on an explicit start(): counters are reset and it tries again.
    (State.FATAL, State.STARTING): "start requested; counters reset",
    # FATAL -> STOPPED on stop(): the operator clears the failure without retrying.
    (State.FATAL, State.STOPPED): "stop requested",
    # RUNNING -> DRAINING when a new instance took over (a profile switch): SIGTERM, the service
    # refuses new calls and finishes those in flight for up to stop_grace_s.
    (State.RUNNING, State.DRAINING): "replaced by a new instance",
    # DRAINING -> STOPPED when the drained process group is gone (SIGKILL after the grace if needed).
    (State.DRAINING, State.STOPPED): "drained",
}

#: States in which a process of the service may be alive.
LIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING, State.DRAINING})
#: States from which nothing happens until someone calls start() or stop().
RESTING_STATES = frozenset({State.STOPPED, State.EXITED, State.FATAL})


class IllegalTransition(SupervisorError):
    """The state machine tried an edge that is not in TRANSITIONS: a bug in the supervisor."""

    def __init__(self, service: str, src: State, dst: State) -> None:
        self.service, self.src, self.dst = service, src, dst
        allowed = sorted(d.value for (s, d) in TRANSITIONS if s is src)
        super().__init__(
            f"service {service!r}: illegal state transition {src.value} -> {dst.value}; "
            f"from {src.value} only {', '.join(allowed) or 'nothing'} is allowed. This is a supervisor bug: "
            "please report it with the service log"
        )


def check_transition(service: str, src: State, dst: State) -> str:
    """Return the edge's label, or raise IllegalTransition if ``src -> dst`` is not in the table."""
    try:
        return TRANSITIONS[(src, dst)]
    except KeyError as e:
        raise IllegalTransition(service, src, dst) from e
