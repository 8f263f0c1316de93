"""The bench's handle on one bare-engine probe (``_services_probe.py``) running in a service's venv.

The probe is started with the service's interpreter (``VenvBuilder.python_for``) and the env the
supervisor would give the service (its ``env:`` block, its venv on PATH), is handed the service's
effective config, and then answers one command at a time. Its stderr goes to a log file, whose
tail the bench prints when something fails.

Like a service (the supervisor spawns each in a session of its own), the probe leads its own
session: with the kernel's autogroup scheduling on (``/proc/sys/kernel/sched_autogroup_enabled``)
a session is the unit that shares the CPUs under contention, so both sides compete on the same
terms. It exits when its stdin closes, so it never outlives the bench.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from core.config import ServiceConfig
from core.context import Paths

PROBE_MODULE = "scripts.bench._services_probe"
"""Run as a module from the repo root: as a script, scripts/bench/services.py would shadow the
``services`` package on sys.path."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProbeError(Exception):
    """The probe died, timed out or reported an error; the message says which."""


class Probe:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name, self.proc, self.log_path = name, proc, log_path
        self.ready: dict[str, Any] = {}

    @classmethod
    async def start(cls, cfg: ServiceConfig, python: Path, paths: Paths, log_path: Path) -> Probe:
        venv = python.parent.parent
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env.update(cfg.env)
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin{os.pathsep}{env.get('PATH', '')}",
                   PYTHONUNBUFFERED="1")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(python), "-m", PROBE_MODULE, cfg.name, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=str(paths.root), env=env,
                start_new_session=True,
            )
        probe = cls(cfg.name, proc, log_path)
        spec = {"config": cfg.model_dump(mode="json"), "paths": paths.to_dict()}
        await probe._send(spec)
        return probe

    async def wait_ready(self, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109 - one bound per step
        self.ready = await self._receive(timeout, "loading its engine")
        return self.ready

    async def ask(self, cmd: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:  # noqa: ASYNC109
        await self._send(cmd)
        reply = await self._receive(timeout, f"answering {cmd.get('op', '?')}")
        if "error" in reply:
            raise ProbeError(f"{self.name} probe failed {cmd.get('op', '?')}: {reply['error']}")
        return reply

    async def rss(self) -> int:
        return int((await self.ask({"op": "rss"}, 30.0))["rss_bytes"])

    async def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ProbeError(f"{self.name} probe exited (code {self.proc.returncode}); see {self.log_path}") from e

    async def _receive(self, timeout: float, doing: str) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError as e:
            raise ProbeError(f"{self.name} probe took over {timeout:.0f} s {doing}; see {self.log_path}") from e
        if not line:
            code = await self.proc.wait()
            raise ProbeError(f"{self.name} probe exited with code {code} while {doing}; see {self.log_path}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def tail(self, n: int) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []

    async def close(self) -> None:
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end of commands: the probe's loop ends and it exits
        try:
            await asyncio.wait_for(self.proc.wait(), 10.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
