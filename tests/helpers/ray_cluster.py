"""Ray nodes for tests: a worker node joining a head, and the memory of Ray's processes.

The head is started by the cluster agent itself (``services.cluster.head.RayHead``). A second
node shares the head's IP (127.0.0.1 in a loopback namespace), so it gets its own worker port
range, dashboard-agent and metrics ports. Stopping signals the node's process group and every
descendant (never ``ray stop``, which kills every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from services.cluster.head import stop_tree
from tests.helpers.service_process import free_port


@dataclass
class RayNode:
    """``ray start --address=<head> --block`` from the cluster venv, logging to ``log_path``."""

    ray_bin: Path
    head: str
    log_path: Path
    num_cpus: float = 1
    temp_dir: str = ""
    worker_ports: tuple[int, int] = (20200, 20300)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 120) -> RayNode:
        cmd = [str(self.ray_bin), "start", f"--address={self.head}", "--block", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.num_cpus:g}", f"--min-worker-port={self.worker_ports[0]}",
               f"--max-worker-port={self.worker_ports[1]}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats"]
        if self.temp_dir:
            cmd.append(f"--temp-dir={self.temp_dir}")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with self.log_path.open("ab") as out:
            offset = out.tell()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "Ray runtime started" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray worker node exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"ray worker node did not start within {timeout} s; see {self.log_path}")

    def stop(self, grace: float = 10) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_tree(proc.pid, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def ray_process_rss(root_pid: int, exclude: set[int]) -> dict[str, float]:
    """RSS (MB) of every process under ``root_pid`` except ``exclude`` (the replicas), by name."""
    out: dict[str, float] = {}
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        if p.pid in exclude:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = p.cmdline()
            name = next((c.split("::")[0] + "::" + c.split("::")[1].split()[0] for c in cmd[:1] if "::" in c), "")
            name = name or Path(cmd[0]).name if cmd else p.name()
            if name.endswith("python") and len(cmd) > 1:
                name = Path(cmd[2] if cmd[1] in ("-u", "-m") and len(cmd) > 2 else cmd[1]).name
            out[name] = round(out.get(name, 0.0) + p.memory_info().rss / 2**20, 1)
    return out
