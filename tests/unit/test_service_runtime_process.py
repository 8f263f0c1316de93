"""Process-level runtime pieces: JSON log lines, the parent watchdog, readiness reasons."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys

from services.runtime.logs import REQUEST_ID, JsonFormatter
from services.runtime.state import ServiceState
from services.runtime.watchdog import ParentWatchdog


def test_json_lines_carry_service_request_id_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("stt"))
    log = logging.getLogger("ultravox.stt.test-json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    token = REQUEST_ID.set("rid-42")
    try:
        log.info("call ok", extra={"method": "Transcribe", "duration_ms": 12.5})
    finally:
        REQUEST_ID.reset(token)
    log.warning("no request here")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = lines
    assert first["service"] == "stt" and first["level"] == "info" and first["msg"] == "call ok"
    assert (
        first["request_id"] == "rid-42" and first["method"] == "Transcribe" and first["duration_ms"] == 12.5
    )
    assert first["ts"].endswith("+00:00")
    assert "request_id" not in second
    assert "ValueError: bad" in third["exc"]


def test_configure_logging_routes_every_logger_to_json_on_stderr() -> None:
    code = (
        "import logging; from services.runtime.logs import configure_logging; configure_logging('svc'); "
        "logging.getLogger('uvicorn.error').info('from uvicorn'); logging.getLogger('x').debug('hidden')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines == [
        {
            "ts": lines[0]["ts"],
            "level": "info",
            "service": "svc",
            "logger": "uvicorn.error",
            "msg": "from uvicorn",
        }
    ]


def test_values_json_cannot_carry_are_written_with_repr() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.blob = object()
    assert json.loads(JsonFormatter("s").format(record))["blob"].startswith("<object object")


async def test_watchdog_reports_a_vanished_main() -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()  # a pid that no longer exists
    reasons: list[str] = []
    dog = ParentWatchdog(child.pid, reasons.append, logging.getLogger("test"), period_s=0.01)
    await dog.run()
    assert reasons == [f"main process {child.pid} no longer exists"]


async def test_watchdog_stays_quiet_while_the_parent_lives() -> None:
    dog = ParentWatchdog(None, lambda r: None, logging.getLogger("test"))
    assert dog.orphaned() is None


def test_readiness_reasons_say_what_to_do() -> None:
    state = ServiceState("stt")
    assert "starting" in state.reason()
    state.loading()
    assert "retry when /readyz returns 200" in state.reason()
    state.failed("ConfigError: no such folder")
    assert "failed to load its model: ConfigError" in state.reason()
    state.loaded(1.25)
    assert state.ready and "1.25 s" in state.reason()
    state.draining()
    assert not state.ready and "shutting down" in state.reason()
