"""The supervisor's state machine against a fake ProcessAPI and a fake health prober.

Timings are tiny (ms backoffs and probe periods) so each test runs in well under a second;
waits are bounded polls, never assertions on elapsed time.
"""

from __future__ import annotations

import json
import logging
import random
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core.context import LAUNCH_SPEC_ENV
from core.errors import NotFound, PortInUse, ServiceUnavailable, SupervisorError, UnknownService
from core.managers.supervisor import HealthStatus, ServiceSupervisor, State
from core.managers.supervisor.process import describe_exit
from tests.helpers.supervisor_fakes import (
    FakeClock,
    FakeProber,
    FakeProcess,
    FakeProcessAPI,
    eventually,
    make_ctx,
    service_config,
)

Transition = tuple[str, State, State, str]


class Rig:
    def __init__(self, tmp: Path, **cfg: Any) -> None:
        self.api = FakeProcessAPI()
        self.prober = FakeProber(self.api)
        self.clock = FakeClock()
        self.ctx = make_ctx(tmp, service_config("svc", **cfg))
        self.sup = ServiceSupervisor(
            self.ctx, process_api=self.api, prober=self.prober,
            command=lambda c: ["fake-python", "-m", c.module],
            clock=self.clock, rng=random.Random(7), ready_poll_s=0.01,
        )
        self.transitions: list[Transition] = []
        self.sup.add_listener(lambda *t: self.transitions.append(t))

    @property
    def state(self) -> State:
        return self.sup.status("svc").state

    def edges(self) -> list[tuple[State, State]]:
        return [(a, b) for _, a, b, _ in self.transitions]

    async def running(self, restarts: int | None = None) -> None:
        await eventually(
            lambda: self.state is State.RUNNING
            and (restarts is None or self.sup.status("svc").restarts == restarts),
            what=f"RUNNING with restarts={restarts}",
        )


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Rig]]:
    """``make_rig(**service_config_overrides)``; every rig is shut down after the test."""
    made: list[Rig] = []

    def make(**cfg: Any) -> Rig:
        made.append(Rig(tmp_path, **cfg))
        return made[-1]

    yield make
    for r in made:
        await r.sup.shutdown()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


async def test_start_reaches_running_only_when_serving(rig: Rig) -> None:
    rig.api.on_spawn = lambda p: setattr(p, "health", HealthStatus.NOT_SERVING)  # model still loading
    st = await rig.sup.start("svc")
    assert st.state is State.STARTING and st.pid == rig.api.last.pid
    await eventually(lambda: rig.prober.probes >= 3, what="a few startup probes")
    assert rig.state is State.STARTING
    rig.api.last.health = HealthStatus.SERVING
    await rig.running()
    assert rig.edges() == [(State.STOPPED, State.STARTING), (State.STARTING, State.RUNNING)]
    st = rig.sup.status("svc")
    assert st.rss_bytes == 4096 and st.cpu_percent == 1.5 and st.uptime_s is not None and st.restarts == 0


async def test_spawn_gets_command_env_cwd_and_launch_spec(rig: Rig) -> None:
    await rig.sup.start("svc")
    spec = rig.api.last.spec
    assert list(spec.argv) == ["fake-python", "-m", "services.stt"]
    assert spec.cwd == rig.ctx.global_.paths.root
    assert spec.env["PYTHONUNBUFFERED"] == "1"
    launch = json.loads(spec.env[LAUNCH_SPEC_ENV])
    st = rig.sup.status("svc")
    assert launch["service"] == "svc" and launch["token"] == "test-token"
    assert (launch["grpc_port"], launch["http_port"]) == (st.grpc_port, st.http_port)
    assert st.grpc_port and st.http_port and st.grpc_port != st.http_port
    ep = rig.sup.endpoint("svc")
    assert (ep.grpc_port, ep.http_port, ep.token) == (st.grpc_port, st.http_port, "test-token")
    assert ep.role == "stt"


async def test_crash_restarts_with_restarts_1(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    first = rig.api.last
    first.crash(-signal.SIGKILL)
    await rig.running(restarts=1)
    st = rig.sup.status("svc")
    assert st.pid != first.pid and len(rig.api.procs) == 2
    assert "killed by SIGKILL" in st.last_error
    assert (State.RUNNING, State.EXITED) in rig.edges()
    i = rig.edges().index((State.RUNNING, State.EXITED))
    assert rig.edges()[i:i + 4] == [
        (State.RUNNING, State.EXITED), (State.EXITED, State.BACKOFF), (State.BACKOFF, State.STARTING),
        (State.STARTING, State.RUNNING),
    ]
    assert first.grpc_port in rig.prober.forgotten  # its health channel was dropped


async def test_hung_service_is_detected_and_restarted(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    hung = rig.api.last
    hung.hang()  # as SIGSTOP: probes time out
    await rig.running(restarts=1)
    st = rig.sup.status("svc")
    assert st.health_failures == 3  # failure_threshold consecutive TIMEOUTs
    assert "liveness" in st.last_error and "TIMEOUT" in st.last_error
    assert hung.signals[:2] == [signal.SIGTERM, signal.SIGCONT] and not hung.alive
    assert (State.RUNNING, State.STOPPING) in rig.edges() and (State.STOPPING, State.BACKOFF) in rig.edges()
    reasons = [r for _, a, b, r in rig.transitions if (a, b) == (State.RUNNING, State.STOPPING)]
    assert reasons == ["liveness failed 3x (TIMEOUT)"]


async def test_one_failed_probe_below_threshold_does_not_restart(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    p = rig.api.last
    p.health = HealthStatus.NOT_SERVING
    await eventually(lambda: rig.sup.status("svc").health_failures >= 1, what="one failed probe")
    p.health = HealthStatus.SERVING
    n = rig.prober.probes
    await eventually(lambda: rig.prober.probes >= n + 5, what="more probes")
    assert rig.state is State.RUNNING and len(rig.api.procs) == 1


async def test_stop_terminates_and_does_not_restart(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(stop_grace_s=5)
    await rig.sup.start("svc")
    await rig.running()
    p = rig.api.last
    st = await rig.sup.stop("svc")
    assert st.state is State.STOPPED and st.pid is None
    assert p.signals[0] == signal.SIGTERM and p.returncode == 0
    n = rig.prober.probes
    await eventually(lambda: True)
    assert len(rig.api.procs) == 1 and rig.state is State.STOPPED and rig.prober.probes == n
    assert rig.edges()[-2:] == [(State.RUNNING, State.STOPPING), (State.STOPPING, State.STOPPED)]


async def test_stop_kills_the_group_when_sigterm_is_ignored(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(stop_grace_s=0.05)
    rig.api.on_spawn = lambda p: setattr(p, "ignore_sigterm", True)
    await rig.sup.start("svc")
    await rig.running()
    p = rig.api.last
    await rig.sup.stop("svc")
    assert signal.SIGKILL in p.signals and p.returncode == -signal.SIGKILL
    assert "killed by SIGKILL" in rig.sup.tail_logs("svc", 50)[-2]


async def test_stop_during_startup_and_during_backoff(rig: Rig) -> None:
    rig.api.on_spawn = lambda p: setattr(p, "health", HealthStatus.NOT_SERVING)
    await rig.sup.start("svc")
    await rig.sup.stop("svc")
    assert rig.state is State.STOPPED
    assert rig.edges()[-2:] == [(State.STARTING, State.STOPPING), (State.STOPPING, State.STOPPED)]


async def test_stop_in_backoff_cancels_the_pending_restart(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(restart={"backoff_base_s": 5.0, "backoff_cap_s": 5.0})
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.crash(3)
    await eventually(lambda: rig.state is State.BACKOFF, what="BACKOFF")
    await rig.sup.stop("svc")
    assert rig.state is State.STOPPED and len(rig.api.procs) == 1
    assert rig.edges()[-1] == (State.BACKOFF, State.STOPPED)


async def test_port_in_use_is_fatal_with_a_clear_message(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(grpc_port=50999, http_port=50998)
    rig.api.busy_ports.add(50999)
    with pytest.raises(PortInUse) as ei:
        await rig.sup.start("svc")
    st = rig.sup.status("svc")
    assert st.state is State.FATAL and st.last_error == str(ei.value)
    assert "'svc'" in st.last_error and "50999" in st.last_error and "grpc" in st.last_error
    assert rig.api.procs == []  # nothing was spawned
    assert await rig.sup.wait_ready(1.0) is False


async def test_crash_at_every_start_ends_fatal_for_flapping(rig: Rig) -> None:
    rig.api.on_spawn = lambda p: p.crash(1)
    await rig.sup.start("svc")
    await eventually(lambda: rig.state is State.FATAL, what="FATAL")
    st = rig.sup.status("svc")
    assert st.restarts == 3  # flapping_max_restarts: the 4th failure gives up
    assert len(rig.api.procs) == 4
    assert "flapping" in st.last_error and "4 failures" in st.last_error and "exit code 1" in st.last_error
    assert rig.edges()[-1] == (State.BACKOFF, State.FATAL)
    assert (State.STARTING, State.BACKOFF) in rig.edges()
    assert (State.STARTING, State.RUNNING) not in rig.edges()
    assert await rig.sup.wait_ready(1.0) is False


async def test_start_on_fatal_resets_counters_and_retries(rig: Rig) -> None:
    rig.api.on_spawn = lambda p: p.crash(1)
    await rig.sup.start("svc")
    await eventually(lambda: rig.state is State.FATAL, what="FATAL")
    rig.api.on_spawn = None  # the cause was fixed
    st = await rig.sup.start("svc")
    assert st.restarts == 0 and st.last_error == ""
    await rig.running(restarts=0)
    assert (State.FATAL, State.STARTING) in rig.edges()


async def test_policy_never(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(restart={"policy": "never"})
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.crash(2)
    await eventually(lambda: rig.state is State.EXITED, what="EXITED")
    await eventually(lambda: True)
    assert len(rig.api.procs) == 1 and rig.state is State.EXITED
    rig.api.on_spawn = lambda p: p.crash(1)
    await rig.sup.start("svc")  # EXITED -> STARTING, then a failed start is final under "never"
    await eventually(lambda: rig.state is State.FATAL, what="FATAL")
    assert rig.sup.status("svc").restarts == 0


async def test_on_failure_leaves_a_clean_exit_alone(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.crash(0)
    await eventually(lambda: rig.state is State.EXITED, what="EXITED")
    assert len(rig.api.procs) == 1 and rig.sup.status("svc").last_error == ""


async def test_always_restarts_a_clean_exit(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(restart={"policy": "always"})
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.crash(0)
    await rig.running(restarts=1)


async def test_startup_timeout_kills_and_retries(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(health={"startup_timeout_s": 0.1})
    rig.api.on_spawn = lambda p: setattr(p, "health", HealthStatus.NOT_SERVING)
    await rig.sup.start("svc")
    await eventually(lambda: len(rig.api.procs) >= 2, what="a second attempt")
    first = rig.api.procs[0]
    assert not first.alive and first.signals[0] == signal.SIGTERM
    assert (State.STARTING, State.STOPPING) in rig.edges() and (State.STOPPING, State.BACKOFF) in rig.edges()
    assert "startup_timeout_s" in rig.sup.status("svc").last_error


async def test_backoff_resets_after_healthy_uptime(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(restart={"reset_after_s": 30, "jitter": 0.0, "backoff_base_s": 0.01, "backoff_cap_s": 10})
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.crash(1)
    await rig.running(restarts=1)
    rig.api.last.crash(1)
    await rig.running(restarts=2)
    notes = "\n".join(rig.sup.tail_logs("svc", 200))
    assert "backoff attempt 2" in notes and "backoff reset" not in notes
    rig.clock.advance(31)  # it has now been healthy longer than reset_after_s
    rig.api.last.crash(1)
    await rig.running(restarts=3)
    notes = "\n".join(rig.sup.tail_logs("svc", 200))
    assert "backoff reset" in notes
    assert notes.rstrip().count("backoff attempt 1)") == 2  # the first restart, and the one after the reset


async def test_spawn_failure_is_fatal(rig: Rig) -> None:
    rig.api.spawn_error = FileNotFoundError(2, "No such file or directory", "fake-python")
    with pytest.raises(SupervisorError, match="could not be spawned") as ei:
        await rig.sup.start("svc")
    assert isinstance(ei.value.__cause__, FileNotFoundError)
    assert rig.state is State.FATAL and "fake-python" in rig.sup.status("svc").last_error


async def test_restart_is_manual_and_not_counted(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    first = rig.api.last
    st = await rig.sup.restart("svc")
    assert st.state is State.STARTING and not first.alive
    await rig.running(restarts=0)


async def test_wait_ready_and_start_all(rig: Rig) -> None:
    await rig.sup.start_all()
    assert await rig.sup.wait_ready(10.0) is True
    assert await rig.sup.wait_ready(10.0, ["svc"]) is True


async def test_unknown_names(rig: Rig) -> None:
    with pytest.raises(UnknownService, match=r"'nope'.*svc"):
        rig.sup.status("nope")
    with pytest.raises(UnknownService):
        await rig.sup.start("nope")
    with pytest.raises(UnknownService):
        rig.sup.log_path("nope")
    with pytest.raises(NotFound, match="'nope'"):
        rig.sup.endpoint("nope")
    with pytest.raises(ServiceUnavailable, match="not been started"):
        rig.sup.endpoint("svc")  # port 0 and never spawned: no ports yet
    assert rig.sup.names() == ["svc"]


async def test_transitions_are_logged_with_service_from_to_reason(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ultravox.main")
    await rig.sup.start("svc")
    await rig.running()
    recs = [r for r in caplog.records if getattr(r, "to_state", None)]
    assert [(r.svc, r.from_state, r.to_state) for r in recs] == [  # type: ignore[attr-defined]
        ("svc", "STOPPED", "STARTING"), ("svc", "STARTING", "RUNNING"),
    ]
    assert recs[0].reason == "start requested"  # type: ignore[attr-defined]
    assert "svc: STOPPED -> STARTING: start requested" in recs[0].getMessage()


async def test_service_log_gets_output_and_supervisor_notes(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    rig.api.last.on_output("hello from the child")
    lines = rig.sup.tail_logs("svc", 100)
    assert any("fake service pid" in ln for ln in lines)
    assert lines[-1] == "hello from the child"
    assert any("[supervisor]" in ln and "STARTING -> RUNNING" in ln for ln in lines)
    assert rig.sup.log_path("svc") == rig.ctx.global_.paths.logs / "svc.log"
    assert rig.sup.tail_logs("svc", 2) == lines[-2:]


async def test_listener_errors_do_not_break_supervision(rig: Rig) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("metrics down")

    rig.sup.add_listener(boom)
    await rig.sup.start("svc")
    await rig.running()


async def test_shutdown_stops_everything_and_closes_the_prober(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    p: FakeProcess = rig.api.last
    await rig.sup.shutdown()
    assert rig.state is State.STOPPED and not p.alive and rig.prober.closed
    d = rig.sup.status("svc").to_dict()
    assert d["state"] == "STOPPED" and d["pid"] is None
    assert set(d) == {
        "name", "role", "state", "pid", "host", "grpc_port", "http_port", "restarts", "uptime_s", "rss_bytes",
        "cpu_percent", "health_failures", "last_error", "venv",
    }


async def test_stop_when_not_running_is_a_no_op_and_clears_fatal(rig: Rig) -> None:
    assert (await rig.sup.stop("svc")).state is State.STOPPED and rig.transitions == []
    rig.api.spawn_error = OSError("exec failed")
    with pytest.raises(SupervisorError):
        await rig.sup.start("svc")
    assert (await rig.sup.stop("svc")).state is State.STOPPED
    assert rig.edges()[-1] == (State.FATAL, State.STOPPED)


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


# ---- blue-green replacement (a profile switch) ---------------------------------------------------

async def test_replace_starts_beside_switches_then_drains_the_old_one(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    old = rig.api.last
    old_ep = rig.sup.endpoint("svc")
    report = await rig.sup.replace("svc", service_config("svc", options={"beam_size": 5}))
    new = rig.api.last
    assert report.ok and report.old_pid == old.pid and report.new_pid == new.pid != old.pid
    assert old.signals[0] == signal.SIGTERM and old.returncode is not None  # drained: asked to stop, gone
    assert new.returncode is None and rig.state is State.RUNNING
    ep = rig.sup.endpoint("svc")
    assert ep.grpc_port != old_ep.grpc_port  # new calls go to the new instance, on its own free ports
    launch = json.loads(new.spec.env[LAUNCH_SPEC_ENV])
    assert launch["settings"]["services"]["svc"]["options"]["beam_size"] == 5  # the child reads the new config
    assert (State.RUNNING, State.DRAINING) in rig.edges() and (State.DRAINING, State.STOPPED) in rig.edges()
    assert [s.name for s in rig.sup.statuses()] == ["svc"]  # one instance listed
    assert report.start_s >= 0 and report.total_s >= report.start_s


async def test_a_replacement_that_cannot_start_leaves_the_old_one_serving(rig: Rig) -> None:
    await rig.sup.start("svc")
    await rig.running()
    old = rig.api.last

    def crash(p: FakeProcess) -> None:
        p.health = HealthStatus.NOT_SERVING
        p.on_output("ValueError: model file missing.onnx not found")
        p.crash(3)

    rig.api.on_spawn = crash
    report = await rig.sup.replace("svc", service_config("svc", restart={"policy": "never"}))
    assert not report.ok and "did not start" in report.error
    assert any("missing.onnx" in line for line in report.log_tail), report.log_tail
    assert old.returncode is None and old.signals == [] and rig.state is State.RUNNING
    assert rig.sup.status("svc").pid == old.pid
