"""The supervisor with the REAL PosixProcessAPI and gRPC prober against a tiny real child.

The child (tests/fixtures/health_server.py) serves grpc.health.v1 on 127.0.0.1 like a model
service would, without a model, so these tests run in seconds. Waits are bounded polls with
generous limits; measured restart and detection times are printed and written to
``var/test-logs/supervisor-timings.jsonl`` for the record, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.errors import PortInUse
from core.managers.supervisor import ServiceSupervisor, State
from tests.helpers.supervisor_fakes import eventually, make_ctx, service_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "health_server.py"
HOST_SCRIPT = ROOT / "tests" / "fixtures" / "supervisor_host.py"
POLICY: dict[str, Any] = {
    "stop_grace_s": 3,
    "health": {"period_s": 0.5, "timeout_s": 0.5, "failure_threshold": 3, "startup_timeout_s": 30},
    "restart": {
        "policy": "on-failure", "backoff_base_s": 0.1, "backoff_cap_s": 2, "jitter": 0.2,
        "flapping_window_s": 60, "flapping_max_restarts": 3, "reset_after_s": 60,
    },
}


def record_timing(name: str, seconds: float, **extra: Any) -> None:
    keep = Path(os.environ.get("UV_TEST_LOG_DIR", ROOT / "var" / "test-logs"))
    keep.mkdir(parents=True, exist_ok=True)
    line = {"measure": name, "seconds": round(seconds, 3), **extra}
    with (keep / "supervisor-timings.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"[timing] {name}: {seconds:.3f}s {extra or ''}")


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
async def make_sup(tmp_path: Path) -> AsyncIterator[Callable[..., ServiceSupervisor]]:
    made: list[ServiceSupervisor] = []

    def make(**over: Any) -> ServiceSupervisor:
        cfg = service_config("svc", **{**POLICY, **over})
        ctx = make_ctx(tmp_path, cfg, root=ROOT)
        sup = ServiceSupervisor(ctx, command=lambda _c: [sys.executable, str(FIXTURE)])
        made.append(sup)
        return sup

    yield make
    for sup in made:
        pids = [s.pid for s in sup.statuses() if s.pid]
        await sup.shutdown()
        assert all(gone(p) for p in pids), "shutdown left a service process behind"


async def test_start_output_stats_and_graceful_stop(make_sup: Callable[..., ServiceSupervisor]) -> None:
    sup = make_sup()
    t0 = time.monotonic()
    await sup.start_all()
    assert await sup.wait_ready(60), sup.status("svc")
    record_timing("spawn_to_running", time.monotonic() - t0)
    st = sup.status("svc")
    assert st.state is State.RUNNING and st.pid and not gone(st.pid)
    proc = psutil.Process(st.pid)
    assert os.getpgid(st.pid) == st.pid  # leader of its own process group
    assert proc.cwd() == str(ROOT)
    assert st.rss_bytes and st.rss_bytes > 1_000_000
    assert st.cpu_percent is not None and st.uptime_s is not None
    await eventually(
        lambda: any("fixture: SERVING" in ln for ln in sup.tail_logs("svc", 50)), what="child output"
    )
    assert any(f"pid {st.pid}" in ln for ln in sup.tail_logs("svc", 50))
    st = await sup.stop("svc")
    assert st.state is State.STOPPED and gone(proc.pid)
    lines = sup.tail_logs("svc", 20)
    assert any("SIGTERM, draining" in ln for ln in lines)  # it got SIGTERM and drained...
    assert any("exit code 0" in ln for ln in lines)  # ...and exited cleanly, without SIGKILL
    assert not any("SIGKILL" in ln for ln in lines)


async def test_kill_9_is_running_again_with_restarts_1(make_sup: Callable[..., ServiceSupervisor]) -> None:
    sup = make_sup()
    await sup.start_all()
    assert await sup.wait_ready(60), sup.status("svc")
    old = sup.status("svc").pid
    assert old
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    await eventually(lambda: sup.status("svc").state is not State.RUNNING, 30, "the crash to be seen")
    t_seen = time.monotonic() - t0
    await eventually(
        lambda: sup.status("svc").state is State.RUNNING and sup.status("svc").restarts == 1, 60,
        "RUNNING again",
    )
    record_timing("kill9_detected", t_seen)
    record_timing("kill9_to_running", time.monotonic() - t0)
    st = sup.status("svc")
    assert st.pid != old and gone(old)
    assert "killed by SIGKILL" in st.last_error


async def test_sigstop_is_detected_and_restarted(make_sup: Callable[..., ServiceSupervisor]) -> None:
    sup = make_sup()
    await sup.start_all()
    assert await sup.wait_ready(60), sup.status("svc")
    old = sup.status("svc").pid
    assert old
    t0 = time.monotonic()
    os.kill(old, signal.SIGSTOP)
    try:
        await eventually(lambda: sup.status("svc").state is not State.RUNNING, 60, "the hang to be detected")
        t_detect = time.monotonic() - t0
        await eventually(
            lambda: sup.status("svc").state is State.RUNNING and sup.status("svc").restarts == 1, 60,
            "RUNNING again",
        )
    finally:
        if not gone(old):
            os.kill(old, signal.SIGCONT)
    record_timing("sigstop_detected", t_detect, period_s=0.5, timeout_s=0.5, failure_threshold=3)
    record_timing("sigstop_to_running", time.monotonic() - t0)
    st = sup.status("svc")
    assert st.pid != old and gone(old)
    assert st.health_failures == 3 and "TIMEOUT" in st.last_error


async def test_crash_at_start_ends_fatal(make_sup: Callable[..., ServiceSupervisor]) -> None:
    sup = make_sup(env={"FIXTURE_MODE": "crash-at-start"})
    await sup.start_all()
    assert await sup.wait_ready(60) is False
    await eventually(lambda: sup.status("svc").state is State.FATAL, 60, "FATAL")
    st = sup.status("svc")
    assert st.restarts == 3 and st.pid is None
    assert "flapping" in st.last_error and "exit code 3" in st.last_error
    assert any("crashing at start on purpose" in ln for ln in sup.tail_logs("svc", 100))


async def test_port_in_use_is_a_clear_error(make_sup: Callable[..., ServiceSupervisor]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        sup = make_sup(grpc_port=port)
        with pytest.raises(PortInUse) as ei:
            await sup.start("svc")
    msg = str(ei.value)
    assert "'svc'" in msg and str(port) in msg and "grpc" in msg and "already in use" in msg
    st = sup.status("svc")
    assert st.state is State.FATAL and st.last_error == msg and st.pid is None


async def test_sigkill_of_main_leaves_no_service(tmp_path: Path) -> None:
    """A stand-in for main runs a real supervisor; kill -9 it and its service must die too."""
    host = await asyncio.create_subprocess_exec(
        sys.executable, str(HOST_SCRIPT), str(tmp_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert host.stdout is not None
    lines: list[str] = []
    try:
        pid = 0
        async with asyncio.timeout(90):
            while line := (await host.stdout.readline()).decode():
                lines.append(line)
                if line.startswith("SERVICE_PID "):
                    pid = int(line.split()[1])
                    break
        assert pid, f"the supervisor host never reported a RUNNING service:\n{''.join(lines)}"
        assert psutil.Process(pid).ppid() == host.pid
        t0 = time.monotonic()
        host.kill()  # SIGKILL: no cleanup code in the parent runs
        await host.wait()
        await eventually(lambda: gone(pid), 15, f"service pid {pid} to die with its parent")
        record_timing("parent_sigkill_to_child_gone", time.monotonic() - t0)
    finally:
        if host.returncode is None:
            host.kill()
            await host.wait()
