"""Logging for main and the services: JSON lines by default, text for terminals, secrets kept out.

Context (``service``, ``request_id``, ``session_id``, ``turn_id``) travels in contextvars and is
added to every record by a filter, so call sites just log. Main sets them per HTTP request
(:class:`RequestContext`) and per turn; the hub sends them to services as call metadata
(``x-request-id``, ``x-session-id``, ``x-turn-id``), where the runtime sets them again.

What a line may carry is decided here, not at each call site (see docs/observability.md):

* bytes (audio) are written as ``<N bytes>``, never their content;
* values (other than numbers) of fields named like a credential (``api_key``, ``authorization``,
  ``token``, ``secret``, ``password``, ``credential``, ``cookie``) are masked;
* fields that hold conversation content (``text``, ``transcript``, ``delta``, ``user_text``,
  ``assistant_text``, ``prompt``, ``content``, ``messages``) are written as ``<N chars>`` or
  ``<N items>``: transcripts and replies live in the conversation store, not in logs;
* dicts, lists and dataclasses are redacted field by field with the same rules, at any depth
  (``extra={"headers": {...}}`` masks its ``Authorization``);
* the process's own secrets (:func:`register_secret`: the API key, the internal token, TURN
  credentials) are replaced by ``***`` wherever they appear in a line, messages and tracebacks
  included, and so is any ``api_key=`` or ``token=`` query parameter (a wrong one too), any client
  token (JWT) and any API key main made (``uvk_...``), since there are too many to register;
* messages and values longer than ``MAX_CHARS`` are cut.

Ids that come from outside (a client's ``X-Request-Id``) are used only when :func:`clean_id`
accepts them: they travel on as gRPC metadata and HTTP headers, where a tab or a non-ASCII byte
would make every call of the request fail.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Literal, TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
session_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="")
turn_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("turn_id", default="")
caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
"""Who made the request: an API key's name or ``token:<minting key>`` (set by the access guard; never
the key itself)."""

LogFormat = Literal["json", "text"]
LOG_FORMAT_ENV = "UV_LOG_FORMAT"
"""Env var with the log format; main sets it for its services when one was chosen explicitly."""
MAX_CHARS = 4000
MASK = "***"
CONTEXT_HEADERS = {"x-request-id": request_id_var, "x-session-id": session_id_var, "x-turn-id": turn_id_var}
"""Call metadata (gRPC) and HTTP headers that carry the logging context from main to services."""

_CTX_VARS = {"request_id": request_id_var, "session_id": session_id_var, "turn_id": turn_id_var,
             "caller": caller_var}
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "service", "color_message", "taskName",
}
_CREDENTIAL_KEY = re.compile(r"api[_-]?key|authori[sz]ation|token|secret|passw(or)?d|credential|cookie", re.I)
_CONTENT_KEYS = frozenset(
    {"text", "transcript", "delta", "user_text", "assistant_text", "prompt", "content", "messages"}
)
_SECRETS: set[str] = set()
# uvicorn logs a WebSocket's path with its query: `/ws/voice?api_key=...`, right or wrong key.
_KEY_PARAM = re.compile(r"([?&](?:api_key|token)=)[^&\s\"'\\]+", re.I)
# Client tokens (JWTs) and API keys made by main, wherever they appear: there are too many
# tokens to register one by one.
_CREDENTIAL = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|\buvk_[A-Za-z0-9_-]{20,}")
_MAX_DEPTH = 6
_MAX_ITEMS = 50

MAX_ID_CHARS = 64
_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID_CHARS}}}")


def clean_id(value: str) -> str:
    """``value`` when it is a safe id (1 to 64 characters from ``A-Za-z0-9._:-``), else ``""``.

    Ids travel as gRPC metadata and HTTP headers: control characters or bytes past ASCII there
    make gRPC refuse the call and httpx fail to encode it, so a client-chosen id is checked first.
    """
    return value if _ID.fullmatch(value) else ""


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def register_secret(value: str) -> None:
    """Never write ``value`` (a key, token or password of this process) in a log line."""
    if value:
        _SECRETS.add(value)
        _SECRETS.add(json.dumps(value, ensure_ascii=False)[1:-1])  # as it appears inside a JSON line


def scrub(text: str) -> str:
    """``text`` with every registered secret, any ``api_key=`` or ``token=`` query value, and anything
    shaped like a client token or a main-made API key replaced by ``***``."""
    for secret in sorted(_SECRETS, key=len, reverse=True):  # longest first: one secret may contain another
        if secret in text:
            text = text.replace(secret, MASK)
    lower = text.lower()
    if "api_key=" in lower or "token=" in lower:
        text = _KEY_PARAM.sub(rf"\g<1>{MASK}", text)
    if "eyJ" in text or "uvk_" in text:
        text = _CREDENTIAL.sub(MASK, text)
    return text


def _scrub_tree(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _scrub_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_tree(v) for v in value]
    return value


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else f"{text[:MAX_CHARS]}...({len(text)} chars)"


def safe_value(key: str, value: Any, _depth: int = 0) -> Any:
    """What a log field named ``key`` may show of ``value`` (see the module docstring).

    Containers keep their shape (a dict stays a JSON object) with each entry judged by its own
    key; list items inherit the list's key. Anything else is shown by its ``repr``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, bool | int | float) or value is None:
        return value  # counts like completion_tokens are not credentials
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif callable(getattr(value, "model_dump", None)):  # a pydantic model (config: IceServer)
        value = value.model_dump()
    if key in _CONTENT_KEYS:
        if isinstance(value, str):
            return f"<{len(value)} chars>"
        return f"<{len(value)} items>" if hasattr(value, "__len__") else "<redacted>"
    if _CREDENTIAL_KEY.search(key):
        return MASK if value else value
    if isinstance(value, str):
        return _cut(value)
    if _depth >= _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):  # dicts, request headers
        items = list(value.items())
        out = {str(k): safe_value(str(k), v, _depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = f"({len(items)} entries)"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        kept = [safe_value(key, v, _depth + 1) for v in seq[:_MAX_ITEMS]]
        return [*kept, f"...({len(seq)} items)"] if len(seq) > _MAX_ITEMS else kept
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
        # Scrubbed value by value, not as a line: a short secret (say "12") must not cut into
        # the JSON itself (`"chars": 12`), which would leave a line no parser reads.
        return json.dumps(_scrub_tree(out), ensure_ascii=False)


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

    The id is the client's ``x-request-id`` when :func:`clean_id` accepts it, else a new one (a
    bad id is replaced, not repaired); HTTP responses carry it back in ``x-request-id``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        rid = clean_id(given.decode("latin-1")) or new_request_id()
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
