"""Log lines: context ids, the redaction guard, text format, rotation, and the ids' trip across the hub.

The real-process check (a voice turn's logs hold no key, token, audio or conversation text) is
tests/integration/test_log_redaction.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from core.logs import (
    MAX_CHARS,
    JsonFormatter,
    RequestContext,
    TextFormatter,
    add_log_file,
    clean_id,
    context_metadata,
    register_secret,
    request_id_var,
    session_id_var,
    setup_logging,
    turn_id_var,
)
from core.managers.hub.manager import _caller_metadata
from tests.helpers.fake_service import TOKEN, TRANSCRIBE, make_runtime

SECRET = "sk-test-THE-SECRET-KEY-0123456789"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Route the root logger to a JSON stream for one test, then put the handlers back."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("main", "json", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_carries_service_and_the_context_ids(lines: io.StringIO) -> None:
    tokens = [var.set(v) for var, v in ((request_id_var, "r1"), (session_id_var, "s1"), (turn_id_var, "t1"))]
    try:
        logging.getLogger("ultravox.main.x").info("hello %s", "world", extra={"chars": 12})
    finally:
        for var, tok in zip((request_id_var, session_id_var, turn_id_var), tokens, strict=True):
            var.reset(tok)
    logging.getLogger("ultravox.main.x").info("outside")
    first, second = records(lines)
    assert first | {"ts": ""} == {"ts": "", "level": "info", "service": "main", "logger": "ultravox.main.x",
                                  "msg": "hello world", "request_id": "r1", "session_id": "s1", "turn_id": "t1",
                                  "chars": 12}
    assert str(first["ts"]).endswith("+00:00")
    assert set(second) == {"ts", "level", "service", "logger", "msg"}


def test_audio_credentials_and_conversation_text_never_reach_a_line(lines: io.StringIO) -> None:
    audio = bytes(range(256)) * 4
    log = logging.getLogger("ultravox.main.x")
    log.info("frame %r", audio, extra={"audio": audio, "api_key": "abc-123-zzz", "authorization": "Bearer xyz",
                                        "completion_tokens": 42, "text": "my bank password is hunter2",
                                        "delta": "secret reply words"})
    (rec,) = records(lines)
    assert rec["msg"] == "frame <1024 bytes>"
    assert rec["audio"] == "<1024 bytes>"
    assert rec["api_key"] == "***" and rec["authorization"] == "***"
    assert rec["completion_tokens"] == 42  # a count is not a credential
    assert rec["text"] == "<27 chars>" and rec["delta"] == "<18 chars>"
    raw = lines.getvalue()
    for leaked in ("\\x00\\x01", "hunter2", "secret reply", "abc-123-zzz", "xyz"):
        assert leaked not in raw


def test_registered_secrets_are_masked_in_messages_fields_and_tracebacks(lines: io.StringIO) -> None:
    register_secret(SECRET)
    register_secret('quote"d-secret\\value')
    log = logging.getLogger("ultravox.main.x")
    log.warning("auth header was Bearer %s", SECRET, extra={"header": f"Bearer {SECRET}"})
    try:
        raise RuntimeError(f"connect failed with key {SECRET}")
    except RuntimeError:
        log.exception("failed")
    log.info('odd key quote"d-secret\\value')
    raw = lines.getvalue()
    assert SECRET not in raw and "quote" not in raw
    first, second, third = records(lines)
    assert first["msg"] == "auth header was Bearer ***" and first["header"] == "Bearer ***"
    assert "key ***" in str(second["exc"])
    assert third["msg"] == "odd key ***"


def test_huge_messages_are_cut(lines: io.StringIO) -> None:
    logging.getLogger("x").info("%s", "a" * (MAX_CHARS * 3))
    (rec,) = records(lines)
    assert len(str(rec["msg"])) < MAX_CHARS + 40 and str(rec["msg"]).endswith(f"({MAX_CHARS * 3} chars)")


def test_text_format_has_the_ids_and_the_same_guard() -> None:
    register_secret(SECRET)
    record = logging.makeLogRecord({"msg": "key %s frame %r", "args": (SECRET, b"\x00\x01"), "levelname": "INFO",
                                    "service": "stt", "turn_id": "t9"})
    line = TextFormatter().format(record)
    assert "[stt] key *** frame <2 bytes>" in line and line.endswith("turn_id=t9")
    assert JsonFormatter("stt").format(logging.makeLogRecord({"msg": "m"})).startswith('{"ts"')


def test_the_file_rotates(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    add_log_file(tmp_path / "main.log", "main", max_bytes=2000, backups=2)
    try:
        for i in range(100):
            logging.getLogger("ultravox.main.rot").warning("line %d %s", i, "x" * 50)
    finally:
        for h in root.handlers[len(before):]:
            h.close()
        root.handlers[:] = before
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["main.log", "main.log.1", "main.log.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert json.loads((tmp_path / "main.log").read_text().splitlines()[-1])["msg"].startswith("line 99 ")


def request_id_app() -> tuple[FastAPI, list[str]]:
    """An app with the RequestContext middleware whose one route, /x, records the request id it ran with."""
    app = FastAPI()
    seen: list[str] = []

    @app.get("/x")
    async def x() -> dict[str, str]:
        seen.append(request_id_var.get())
        return {}

    app.add_middleware(RequestContext)
    return app, seen


async def test_each_http_request_gets_a_request_id_that_comes_back() -> None:
    app, seen = request_id_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://main") as c:
        given = await c.get("/x", headers={"x-request-id": "client-rid-1"})
        fresh = await c.get("/x")
    assert given.headers["x-request-id"] == "client-rid-1" and seen[0] == "client-rid-1"
    assert fresh.headers["x-request-id"] == seen[1] and len(seen[1]) == 16
    assert request_id_var.get() == ""


def test_hub_calls_carry_the_context_ids_unless_the_caller_set_its_own() -> None:
    tokens = [var.set(v) for var, v in ((request_id_var, "r1"), (session_id_var, "s1"), (turn_id_var, "t1"))]
    try:
        assert context_metadata() == {"x-request-id": "r1", "x-session-id": "s1", "x-turn-id": "t1"}
        md = dict(_caller_metadata({"X-Request-Id": "turn-7", "x-internal-token": "nope"}))
    finally:
        for var, tok in zip((request_id_var, session_id_var, turn_id_var), tokens, strict=True):
            var.reset(tok)
    assert md == {"x-request-id": "turn-7", "x-session-id": "s1", "x-turn-id": "t1"}
    assert set(dict(_caller_metadata(None))) == {"x-request-id"}  # outside any context: a fresh id only


async def test_a_service_call_runs_with_the_ids_main_sent(lines: io.StringIO) -> None:
    rt = make_runtime()
    headers = {"x-internal-token": TOKEN, "x-request-id": "r5", "x-session-id": "s5", "x-turn-id": "t5"}
    logging.getLogger().setLevel(logging.DEBUG)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        assert (await c.post(TRANSCRIBE.http_path, json={}, headers=headers)).status_code == 200
    (call,) = rt.service.calls
    assert (call.request_id, call.session_id, call.turn_id) == ("r5", "s5", "t5")
    done = [r for r in records(lines) if r["msg"] == "call ok"]
    assert done and {k: done[0][k] for k in ("request_id", "session_id", "turn_id")} == {
        "request_id": "r5", "session_id": "s5", "turn_id": "t5"}
    assert session_id_var.get() == "" and turn_id_var.get() == ""


@pytest.mark.parametrize(("env", "first_char"), [("text", ""), ("json", "{")])
def test_services_follow_uv_log_format(env: str, first_char: str) -> None:
    code = ("from services.runtime.logs import configure_logging; configure_logging('svc'); "
            "import logging; logging.getLogger('x').warning('hi %s', b'\\x00\\x01')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "UV_LOG_FORMAT": env})
    line = out.stderr.strip()
    assert "hi <2 bytes>" in line
    assert line.startswith("{") if first_char else " WARNING [svc] hi <2 bytes>" in line


# ---- ids from outside, and redaction of containers -------------------------------------------

NASTY_IDS = ["has\ttab", "caf\u00e9-id", "a" * 65, "new\nline", "", "sp ace", "x" * 64 + "\u00ff"]


@pytest.mark.parametrize("given", NASTY_IDS)
def test_clean_id_refuses_what_a_header_cannot_carry(given: str) -> None:
    assert clean_id(given) == ""


def test_clean_id_keeps_ordinary_ids() -> None:
    for good in ("r1", "turn-7", "a.b:c_d-e", "A" * 64):
        assert clean_id(good) == good


async def test_a_nasty_request_id_header_is_replaced_not_echoed() -> None:
    app, seen = request_id_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://main") as c:
        tab = await c.get("/x", headers={"x-request-id": "bad\tid"})
        high = await c.get("/x", headers=[(b"x-request-id", b"caf\xc3\xa9")])
        long = await c.get("/x", headers={"x-request-id": "r" * 65})
    assert [r.status_code for r in (tab, high, long)] == [200, 200, 200]
    assert all(len(s) == 16 and clean_id(s) == s for s in seen)
    assert [r.headers["x-request-id"] for r in (tab, high, long)] == seen


def test_hub_metadata_never_carries_a_value_a_transport_would_refuse() -> None:
    tokens = [var.set(v) for var, v in ((request_id_var, "bad\tid"), (session_id_var, "s\u00e91"),
                                        (turn_id_var, "t" * 80))]
    try:
        md = dict(_caller_metadata({"x-extra": "caf\u00e9", "x-ok": "fine value", "x-blob-bin": "zz"}))
    finally:
        for var, tok in zip((request_id_var, session_id_var, turn_id_var), tokens, strict=True):
            var.reset(tok)
    assert set(md) == {"x-request-id", "x-turn-id", "x-ok"}  # bad session id and bad extra left out
    assert clean_id(md["x-request-id"]) == md["x-request-id"] != "bad\tid"
    assert md["x-turn-id"] == "t" * 64  # a long but clean id is cut, keeping the correlation
    assert md["x-ok"] == "fine value"
    for key, value in md.items():
        key.encode("ascii"), value.encode("ascii")  # what httpx and grpc need


async def test_a_service_caps_and_cleans_the_ids_it_is_sent(lines: io.StringIO) -> None:
    rt = make_runtime()
    headers = [(b"x-internal-token", TOKEN.encode()), (b"x-request-id", b"r" * 200),
               (b"x-session-id", b"s\xc3\xa9"), (b"x-turn-id", b"t" * 70)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://svc") as c:
        resp = await c.post(TRANSCRIBE.http_path, json={}, headers=headers)
    assert resp.status_code == 200
    (call,) = rt.service.calls
    assert call.request_id == "r" * 64 and resp.headers["x-request-id"] == "r" * 64
    assert call.session_id == "" and call.turn_id == "t" * 64


def test_short_keys_and_any_api_key_query_value_are_masked(lines: io.StringIO) -> None:
    register_secret("k3y")
    log = logging.getLogger("uvicorn.error")
    log.info('%s - "WebSocket /ws/voice?api_key=k3y" [accepted]', "127.0.0.1:5")
    log.info('"WebSocket /ws/voice?x=1&api_key=wrong-guess&y=2" 403')
    log.info("GET /v1/x?API_KEY=Other")
    raw = lines.getvalue()
    assert "k3y" not in raw and "wrong-guess" not in raw and "Other" not in raw
    first, second, third = records(lines)
    assert first["msg"].endswith('"WebSocket /ws/voice?api_key=***" [accepted]')
    assert second["msg"] == '"WebSocket /ws/voice?x=1&api_key=***&y=2" 403'
    assert third["msg"] == "GET /v1/x?API_KEY=***"


def test_containers_are_redacted_at_any_depth(lines: io.StringIO) -> None:
    @dataclasses.dataclass
    class Ice:
        urls: list[str]
        credential: str

    log = logging.getLogger("ultravox.main.x")
    log.info("x", extra={
        "headers": {"Authorization": "Bearer hdr-secret", "accept": "*/*"},
        "ice_servers": [{"urls": ["turn:h:3478"], "username": "u", "credential": "turn-pass"}],
        "peer": {"ice": [Ice(["turn:h"], "dc-pass")], "usage": {"completion_tokens": 7}},
        "messages": [{"role": "user", "content": "my private words"}],
        "body": {"prompt": "say my private words", "n": 2},
        "many": list(range(200)),
    })
    raw = lines.getvalue()
    for leaked in ("hdr-secret", "turn-pass", "dc-pass", "private words"):
        assert leaked not in raw
    (rec,) = records(lines)
    assert rec["headers"] == {"Authorization": "***", "accept": "*/*"}
    assert rec["ice_servers"] == [{"urls": ["turn:h:3478"], "username": "u", "credential": "***"}]
    assert rec["peer"] == {"ice": [{"urls": ["turn:h"], "credential": "***"}], "usage": {"completion_tokens": 7}}
    assert rec["messages"] == "<1 items>" and rec["body"] == {"prompt": "<20 chars>", "n": 2}
    assert len(rec["many"]) == 51 and rec["many"][-1] == "...(200 items)"


def test_a_short_numeric_secret_never_breaks_the_json_line(lines: io.StringIO) -> None:
    register_secret("90817")
    logging.getLogger("ultravox.main.x").info("key 90817", extra={"chars": 90817, "note": "x90817y"})
    (rec,) = records(lines)  # still one parseable JSON object
    assert rec["msg"] == "key ***" and rec["note"] == "x***y" and rec["chars"] == 90817
