"""Per-service log file: the child's stdout+stderr plus the supervisor's own notes, rotated.

Lines from the child are written as they come (the service formats its own logs). Lines the
supervisor adds (spawns, exits, state changes) start with ``[supervisor]`` so that
``sm logs stt`` shows why a service restarted next to what it printed before it died.
"""

from __future__ import annotations

import logging
import os
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from core.config import LogPolicy

_TAIL_CHUNK = 64 * 1024


class ServiceLog:
    def __init__(self, path: Path, policy: LogPolicy) -> None:
        self.path = path
        self._policy = policy
        self._handler: RotatingFileHandler | None = None

    def _open(self) -> RotatingFileHandler:
        if self._handler is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h = RotatingFileHandler(
                self.path, maxBytes=self._policy.max_bytes, backupCount=self._policy.backups,
                encoding="utf-8", errors="replace",
            )
            h.setFormatter(logging.Formatter("%(message)s"))
            self._handler = h
        return self._handler

    def write(self, line: str) -> None:
        """One line of the child's output."""
        h = self._open()
        h.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))  # no args: "%" stays as is

    def note(self, text: str) -> None:
        """One line from the supervisor, timestamped."""
        self.write(f"[supervisor] {time.strftime('%Y-%m-%d %H:%M:%S')} {text}")

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines of the current file (rotated files are not read)."""
        if n <= 0 or not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            data = b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(_TAIL_CHUNK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
        lines = data.decode("utf-8", "replace").splitlines()
        return lines[-n:]

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None
