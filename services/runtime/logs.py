"""Service logging: ``core.logs`` (JSON lines on stderr, or text) plus the call context.

Main captures each service's stderr into rotating log files (var/log/<service>.log), so one
line per record is the whole contract: ``ts``, ``level``, ``service``, ``logger``, ``msg``, the
call's ``request_id``, ``session_id`` and ``turn_id`` (sent by the hub as ``x-request-id``,
``x-session-id`` and ``x-turn-id``; set by the dispatcher for the duration of the call), any
``extra={...}`` fields, and ``exc`` with the traceback. The format is ``UV_LOG_FORMAT``
(``json`` unless main was asked for text). The formatter keeps audio bytes, credentials,
conversation text and the internal token out of the lines (see ``core.logs``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TextIO

from core.logs import (
    LOG_FORMAT_ENV,
    JsonFormatter,
    LogFormat,
    request_id_var,
    session_id_var,
    setup_logging,
    turn_id_var,
)

REQUEST_ID = request_id_var
SESSION_ID = session_id_var
TURN_ID = turn_id_var

__all__ = ["REQUEST_ID", "SESSION_ID", "TURN_ID", "JsonFormatter", "bind_call", "configure_logging"]


def bind_call(request_id: str, session_id: str = "", turn_id: str = "") -> Callable[[], None]:
    """Set the call's ids in the logging context; returns what restores the previous ones.

    The restore tolerates running in another context (a stream generator closed from
    elsewhere): there is nothing to restore then.
    """
    tokens = [(var, var.set(value)) for var, value in
              ((REQUEST_ID, request_id), (SESSION_ID, session_id), (TURN_ID, turn_id))]

    def restore() -> None:
        for var, token in reversed(tokens):
            with contextlib.suppress(ValueError):
                var.reset(token)

    return restore


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger (uvicorn, grpc, the engines) through one handler on stderr."""
    fmt: LogFormat = "text" if os.environ.get(LOG_FORMAT_ENV, "json").lower() == "text" else "json"
    setup_logging(service, fmt, level=level, stream=stream)
