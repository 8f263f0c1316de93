"""No orphans: exit when the process that spawned us is gone.

Main also sets PR_SET_PDEATHSIG on its children; this is the portable second line. A service
is orphaned when it gets re-parented (``os.getppid()`` changes) or when the pid main wrote into
the launch spec no longer exists (for a service started through a wrapper process).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ParentWatchdog:
    """Polls every ``period_s`` and calls ``on_orphaned`` once, with a reason, when the parent dies."""

    def __init__(
        self,
        parent_pid: int | None,
        on_orphaned: Callable[[str], None],
        log: logging.Logger,
        period_s: float = 0.5,
    ) -> None:
        self.parent_pid = parent_pid
        self.on_orphaned = on_orphaned
        self.period_s = period_s
        self.log = log
        self.initial_ppid = os.getppid()

    def orphaned(self) -> str | None:
        """Why we are orphaned, or None while the parent lives."""
        ppid = os.getppid()
        if ppid != self.initial_ppid:
            return f"parent process {self.initial_ppid} exited (re-parented to {ppid})"
        if self.parent_pid is not None and not pid_alive(self.parent_pid):
            return f"main process {self.parent_pid} no longer exists"
        return None

    async def run(self) -> None:
        if self.parent_pid is not None and self.parent_pid != self.initial_ppid:
            self.log.warning(
                "launch spec names main pid %s but our parent is %s; watching both",
                self.parent_pid, self.initial_ppid,
            )
        while True:
            reason = self.orphaned()
            if reason is not None:
                self.on_orphaned(reason)
                return
            await asyncio.sleep(self.period_s)
