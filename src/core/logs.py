"""Logging for main and the services: JSON lines by default, text for terminals, secrets kept out.

Context (``service``, ``request_id``, ``session_id``, ``turn_id``) travels in contextvars and is
added to every record by a filter, so call sites just log. Main sets them per HTTP request
(:class:`RequestContext`) and per turn; the hub sends them to services as call metadata
(``x-request-id``, ``x-session-id``, ``x-turn-id``), where the runtime sets them again.

What a line may carry is decided here, not at each call site (see docs/observability.md):

* bytes (audio) are written as ``<N bytes>``, never their content;
* string values of fields named like a credential (``api_key``, ``authorization``, ``token``,
  ``secret``, ``password``, ``credential``, ``cookie``) are masked;
* fields that hold conversation content (``text``, ``transcript``, ``delta``, ``user_text``,
  ``assistant_text``, ``prompt``, ``content``) are written as ``<N chars>``: transcripts and
  replies live in the conversation store, not in logs;
* the process's own secrets (:func:`register_secret`: the API key, the internal token) are
  replaced by ``***`` wherever they appear in a line, messages and tracebacks included;
* messages and values longer than ``MAX_CHARS`` are cut.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Literal, TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
session_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="")
turn_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("turn_id", default="")

LogFormat = Literal["json", "text"]
LOG_FORMAT_ENV = "UV_LOG_FORMAT"
"""Env var with the log format; main sets it for its services when one was chosen explicitly."""
MAX_CHARS = 4000
MASK = "***"
CONTEXT_HEADERS = {"x-request-id": request_id_var, "x-session-id": session_id_var, "x-turn-id": turn_id_var}
"""Call metadata (gRPC) and HTTP headers that carry the logging context from main to services."""

_CTX_VARS = {"request_id": request_id_var, "session_id": session_id_var, "turn_id": turn_id_var}
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "service", "color_message", "taskName",
}
_CREDENTIAL_KEY = re.compile(r"api[_-]?key|authori[sz]ation|token|secret|passw(or)?d|credential|cookie", re.I)
_CONTENT_KEYS = frozenset({"text", "transcript", "delta", "user_text", "assistant_text", "prompt", "content"})
_SECRETS: set[str] = set()
_MIN_SECRET_CHARS = 8


def register_secret(value: str) -> None:
    """Never write ``value`` (a key or token of this process) in a log line; short values are ignored."""
    if len(value) >= _MIN_SECRET_CHARS:
        _SECRETS.add(value)
        _SECRETS.add(json.dumps(value, ensure_ascii=False)[1:-1])  # as it appears inside a JSON line


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else f"{text[:MAX_CHARS]}...({len(text)} chars)"


def safe_value(key: str, value: Any) -> Any:
    """What a log field may show of ``value`` (see the module docstring)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        if key in _CONTENT_KEYS:
            return f"<{len(value)} chars>"
        if value and _CREDENTIAL_KEY.search(key):
            return MASK
        return _cut(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _cut(repr(value))


class _Placeholder(str):
    """Stands in for a redacted argument; ``%r`` shows it as is, without quotes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _safe_arg(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return _Placeholder(f"<{len(value)} bytes>")
    return value


def _safe_args(args: Any) -> Any:
    """Message arguments with bytes replaced by their size (``%r`` of audio would dump it)."""
    if isinstance(args, tuple):
        return tuple(_safe_arg(a) for a in args)
    if isinstance(args, dict):
        return {k: _safe_arg(v) for k, v in args.items()}
    return args


def _message(record: logging.LogRecord) -> str:
    if record.args:
        record.args = _safe_args(record.args)
    return _cut(record.getMessage())


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, var in _CTX_VARS.items():
            if not getattr(record, key, ""):
                setattr(record, key, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO, UTC), level, service, logger, msg, context ids, extra fields, exc."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", "") or self.service,
            "logger": record.name,
            "msg": _message(record),
        }
        for key, var in _CTX_VARS.items():
            if val := getattr(record, key, "") or var.get():
                out[key] = safe_value(key, val)
        for key, val in record.__dict__.items():
            if key not in _STD_ATTRS and key not in _CTX_VARS and key not in out and not key.startswith("_"):
                out[key] = safe_value(key, val)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(out, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL [service] message  ids`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        ids = " ".join(f"{k}={v}" for k, var in _CTX_VARS.items() if (v := getattr(record, k, "") or var.get()))
        line = f"{ts} {record.levelname:<7} [{getattr(record, 'service', '')}] {_message(record)}"
        line = f"{line}  {ids}" if ids else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def formatter(fmt: LogFormat, service: str = "") -> logging.Formatter:
    return JsonFormatter(service) if fmt == "json" else TextFormatter()


def setup_logging(
    service: str, fmt: LogFormat = "json", *, level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """Route every logger (uvicorn, grpc, the engines) to ``stream`` (stderr) in ``fmt``, tagging ``service``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt, service))
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_log_file(path: Path, service: str, fmt: LogFormat = "json", *, max_bytes: int, backups: int) -> None:
    """Also write every record to ``path``, rotated past ``max_bytes`` (``backups`` old files kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(formatter(fmt, service))
    handler.addFilter(_ContextFilter(service))
    logging.getLogger().addHandler(handler)


class RequestContext:
    """ASGI middleware: each HTTP request or WebSocket runs with a ``request_id`` in its logging context.

    The id is the client's ``x-request-id`` when it sent one (cut to 64 characters), else a new
    one; HTTP responses carry it back in ``x-request-id``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        rid = given.decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def context_metadata() -> dict[str, str]:
    """The logging context as call metadata, for calls to services (empty ids left out)."""
    return {key: value for key, var in CONTEXT_HEADERS.items() if (value := var.get())}
