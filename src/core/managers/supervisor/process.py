"""The one place the supervisor touches the OS: Popen, signals, waitpid, prctl, psutil, ports.

``ProcessAPI`` is the seam. ``PosixProcessAPI`` is the real thing; the state machine above it
only sees ``ProcessHandle`` objects, so its tests run against a fake (and its integration
tests against this class).

Why it is built this way:

* ``spawn`` is a plain (non-async) method that must be called on the event-loop thread.
  PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, so
  forking from a short-lived executor thread would kill the service as soon as that thread
  ended. The loop thread lives as long as main.
* Exit is detected with a pidfd registered on the loop (polling as a fallback), not with
  asyncio's subprocess transport: in Python 3.11 its ``wait()`` also waits for every pipe to
  close, so a crashed service whose grandchild still held stdout would never look dead.
* Each child leads its own session and process group (``start_new_session``), so SIGTERM and
  SIGKILL reach the whole tree and a Ctrl-C on the terminal reaches main only.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import psutil

PR_SET_PDEATHSIG = 1
_MAX_LINE = 64 * 1024
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """What to run: argv, working directory and the complete environment."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProcStats:
    rss_bytes: int
    cpu_percent: float


class ProcessHandle(Protocol):
    """A spawned service process (the leader of its own process group)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """None while alive; the exit code, or minus the signal number, once reaped."""
        ...

    async def wait(self) -> int:
        """Wait until the process has exited and been reaped; return its returncode."""
        ...

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole process group; False if no member is left."""
        ...

    def stats(self) -> ProcStats | None:
        """RSS and CPU of the process now; None once it is gone."""
        ...


class ProcessAPI(Protocol):
    async def spawn(self, spec: SpawnSpec, on_output: Callable[[str], None]) -> ProcessHandle:
        """Start ``spec`` with stdout+stderr piped to ``on_output`` line by line.

        Await it directly on the event loop, never through an executor (see the module
        docstring). Raises OSError when the program cannot be executed.
        """
        ...

    def port_available(self, host: str, port: int) -> bool:
        """True if a server could bind ``host:port`` right now."""
        ...

    def free_port(self, host: str) -> int:
        """A port on ``host`` that is free right now."""
        ...


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL', for logs and last_error."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class _LineProtocol(asyncio.Protocol):
    """Splits the child's output pipe into lines for ``on_output``; survives the child's death."""

    def __init__(self, on_output: Callable[[str], None]) -> None:
        self._on_output = on_output
        self._buf = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._emit(line)
        while len(self._buf) > _MAX_LINE:  # a runaway line without newline: emit it in pieces
            self._emit(self._buf[:_MAX_LINE])
            self._buf = self._buf[_MAX_LINE:]

    def _emit(self, raw: bytes) -> None:
        self._on_output(raw.rstrip(b"\r").decode("utf-8", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = b""
        if not self.closed.done():
            self.closed.set_result(None)


class _PosixProcess:
    """A live child: exit via pidfd (or polling), output via a read-pipe transport."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = -1
        self._poll_handle: asyncio.TimerHandle | None = None
        self._pipe: asyncio.BaseTransport | None = None
        try:
            self._ps: psutil.Process | None = psutil.Process(popen.pid)
            self._ps.cpu_percent(None)  # prime: the next call reports usage since now
        except psutil.Error:
            self._ps = None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
            loop.add_reader(self._pidfd, self._check_exit)
        except (AttributeError, OSError):  # kernel < 5.3 or not Linux: poll instead
            self._pidfd = -1
            self._poll_handle = loop.call_later(_POLL_S, self._poll)
        self._check_exit()

    async def attach_output(self, pipe: IO[bytes], on_output: Callable[[str], None]) -> None:
        self._pipe, _ = await self._loop.connect_read_pipe(lambda: _LineProtocol(on_output), pipe)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _poll(self) -> None:
        self._poll_handle = None
        self._check_exit()
        if not self._exited.done():
            self._poll_handle = self._loop.call_later(_POLL_S, self._poll)

    def _check_exit(self) -> None:
        if self._exited.done():
            return
        rc = self._popen.poll()  # waitpid(pid, WNOHANG)
        if rc is None:
            return
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._exited.set_result(rc)
        self._ps = None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def signal_group(self, sig: int) -> bool:
        # The group id is the leader's pid (start_new_session). Signalling it after the leader was
        # reaped still reaches members it left behind; ESRCH means none are left.
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            # The group id was reused by a process we may not signal: our group is gone.
            return False
        return True

    def stats(self) -> ProcStats | None:
        ps = self._ps
        if ps is None:
            return None
        try:
            with ps.oneshot():
                return ProcStats(rss_bytes=ps.memory_info().rss, cpu_percent=ps.cpu_percent(None))
        except psutil.Error:
            return None


class PosixProcessAPI:
    """Real processes on Linux: own process group, PDEATHSIG=SIGKILL, output through a pipe."""

    def __init__(self) -> None:
        # Resolve prctl now: the preexec hook runs between fork and exec and must not load libraries.
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl: Callable[..., int] | None = getattr(libc, "prctl", None)

    async def spawn(self, spec: SpawnSpec, on_output: Callable[[str], None]) -> ProcessHandle:
        loop = asyncio.get_running_loop()
        # Popen runs right here, on the loop thread, which lives as long as main: see PDEATHSIG above.
        # ASYNC220: Popen must run on the loop thread itself (PDEATHSIG); it returns right after fork.
        # PLW1509: the preexec hook only calls prctl/getppid/kill, which are safe after fork.
        popen = subprocess.Popen(  # noqa: ASYNC220
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=self._preexec(os.getpid()),  # noqa: PLW1509
        )
        handle = _PosixProcess(popen, loop)
        assert popen.stdout is not None
        await handle.attach_output(popen.stdout, on_output)
        return handle

    def _preexec(self, parent_pid: int) -> Callable[[], None]:
        prctl = self._prctl

        def preexec() -> None:  # runs in the child between fork and exec: keep it tiny
            if prctl is not None and prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

        return preexec

    def port_available(self, host: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # SO_REUSEADDR like every server: a port in TIME_WAIT after a restart is not "in use".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
        return True

    def free_port(self, host: str) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
