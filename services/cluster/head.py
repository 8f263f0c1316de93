"""A local Ray head (options.mode ``local``) as a child process the agent owns.

``ray start --head --block`` runs in its own session, bound to 127.0.0.1 (node IP, GCS, client
server), with the dashboard off, usage stats off and the ports from the options. The agent
waits for "Ray runtime started" in the head's log. ``stop`` signals the whole process group and
every descendant it saw (raylet, GCS, workers, replicas): never ``ray stop``, which would kill
every Ray process on the machine, other users' included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from core.errors import PortInUse, SupervisorError
from services.cluster.options import ClusterOptions

log = logging.getLogger("ultravox.cluster.head")
STARTED = "Ray runtime started"
HOST = "127.0.0.1"


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def head_command(o: ClusterOptions, ray_bin: Path) -> list[str]:
    cmd = [
        str(ray_bin), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={o.gcs_port}",
        f"--ray-client-server-port={o.client_port}", f"--min-worker-port={o.min_worker_port}",
        f"--max-worker-port={o.max_worker_port}", f"--num-cpus={o.num_cpus:g}", "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    cmd.append(f"--temp-dir={session_root(o)}")
    return cmd


def session_root(o: ClusterOptions) -> str:
    """Ray's session folder for this head: the configured one, else one of this agent's own, so
    every process of this Ray (the head's and its workers') carries it on its command line."""
    return o.temp_dir or f"/tmp/uvray-{o.gcs_port}"


def sweep(marker: str, grace_s: float = 5) -> int:
    """Stop every process whose command line holds ``marker`` (this head's session folder): Ray
    workers whose parent died are no longer the head's descendants. Returns how many were found."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.info["pid"] != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
    end(found, grace_s)
    return len(found)


class RayHead:
    """The head process: started once, stopped with everything it spawned."""

    def __init__(self, service: str, options: ClusterOptions, log_path: Path) -> None:
        self.service, self.options, self.log_path = service, options, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.options.gcs_port}"

    def start(self, timeout_s: float = 180) -> str:
        o = self.options
        for purpose, port in (("gcs", o.gcs_port), ("ray client", o.client_port)):
            if port_busy(port):
                raise PortInUse(self.service, port, purpose)
        ray_bin = Path(sys.executable).with_name("ray")
        if not ray_bin.exists():
            raise SupervisorError(f"{ray_bin} is missing: the {self.service} venv needs the 'cluster' extra")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        cmd = head_command(o, ray_bin)
        log.info("starting the Ray head: %s (log %s)", " ".join(cmd[1:]), self.log_path)
        with self.log_path.open("ab") as out:
            start = out.tell()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self._log_since(start)
            if STARTED in text:
                log.info("Ray head up at %s (pid %d)", self.address, self.proc.pid)
                return self.address
            if self.proc.poll() is not None:
                raise SupervisorError(f"the Ray head exited with {self.proc.returncode} before it started; "
                                      f"its log ({self.log_path}) ends with:\n{text[-2000:]}")
            time.sleep(0.3)
        self.stop()
        raise SupervisorError(f"the Ray head did not start within {timeout_s:.0f} s; see {self.log_path}")

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM the head's process group and descendants, SIGKILL what outlives ``grace_s``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        family = stop_tree(proc.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if orphans := sweep(session_root(self.options)):
            log.warning("stopped %d Ray process(es) left outside the head's process tree", orphans)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        log.info("Ray head stopped (%d processes)", len(family))


def stop_tree(pid: int, grace_s: float = 10) -> list[psutil.Process]:
    """SIGTERM ``pid``'s process group and every descendant, SIGKILL what outlives ``grace_s``;
    returns the processes it found (Ray's raylet and workers ignore SIGTERM now and then)."""
    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    end(family, grace_s)
    return family


def end(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM each of ``procs``, SIGKILL those still alive after ``grace_s``."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()

