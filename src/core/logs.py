"""Logging setup shared by main and the services: JSON lines by default, text for terminals.

Context (service, request_id, session_id, turn_id) travels in contextvars and is added to every
record by a filter, so call sites just log. Raw audio and secrets are never passed to loggers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
session_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="")
turn_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("turn_id", default="")

_CTX_VARS = {"request_id": request_id_var, "session_id": session_id_var, "turn_id": turn_id_var}
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "service"}


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, var in _CTX_VARS.items():
            if not hasattr(record, key):
                setattr(record, key, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CTX_VARS:
            if val := getattr(record, key, ""):
                out[key] = val
        for key, val in record.__dict__.items():
            if key not in _STD_ATTRS and key not in out and not key.startswith("_"):
                out[key] = val if isinstance(val, str | int | float | bool | None) else repr(val)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        ids = " ".join(f"{k}={v}" for k in _CTX_VARS if (v := getattr(record, k, "")))
        line = f"{ts} {record.levelname:<7} [{getattr(record, 'service', '')}] {record.getMessage()}"
        line = f"{line}  {ids}" if ids else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(
    service: str, fmt: Literal["json", "text"] = "json", *, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Route the root logger to ``stream`` (stderr) in the chosen format, tagging ``service``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
