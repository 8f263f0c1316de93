"""/ws/voice in-process: the real route, sessions, store and orchestrator on the scripted FakeHub.

Covers the protocol without model services: the API key, the default session after the grace
period, typed turns, bad input as error events on a socket that keeps working, admission
refusals as error events, and resume / reset / end. The real services are exercised in
tests/integration/test_ws_voice.py.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from core.config import load_settings
from core.config.models import ConversationConfig
from core.context import GlobalContext, Paths, ProcessContext
from core.gateway.app import access_for, agents_dir, attach_conversation, guard
from core.gateway.routes import voice_ws
from core.gateway.runtime import MainRuntime
from core.managers.remote import RemoteServices
from core.sessions import load_agents
from tests.helpers.conversation_fakes import FakeHub

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    api_key: str = getattr(request, "param", "")
    conf = ConversationConfig(max_ws_frame_bytes=4096, max_text_chars=100, max_concurrent_turns=1, admission_wait_s=0.2)
    if api_key:
        os.environ["UV_API_KEY"] = api_key
    settings = load_settings(ROOT / "config", env={}).model_copy(update={"conversation": conf})
    paths = Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    g = GlobalContext.create(settings, paths)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = ProcessContext(global_=g, name="main")
        rt = MainRuntime(ctx=ctx, supervisor=None, remote=RemoteServices(ctx),  # type: ignore[arg-type]
                         hub=FakeHub())  # type: ignore[arg-type]
        rt.access = access
        await attach_conversation(rt, load_agents(agents_dir(g)))
        app.state.runtime = rt
        try:
            yield
        finally:
            await rt.close_conversation()
            await rt.proxy_client.aclose()

    access = access_for(ProcessContext(global_=g, name="main"))
    os.environ.pop("UV_API_KEY", None)
    app = FastAPI(lifespan=lifespan)
    guard(app, access)
    app.include_router(voice_ws.router)
    with TestClient(app) as c:
        yield c


def until(ws: Any, kind: str) -> tuple[dict[str, Any], list[Any]]:
    """Read until an event of ``kind``; returns it and everything read before it."""
    seen: list[Any] = []
    while True:
        msg = ws.receive()
        if msg.get("bytes") is not None:
            seen.append(msg["bytes"])
            continue
        event = json.loads(msg["text"])
        if event["type"] == kind:
            return event, seen
        seen.append(event)


def test_a_typed_turn_after_the_default_session(client: TestClient) -> None:
    with client.websocket_connect("/ws/voice") as ws:
        ready, _ = until(ws, "ready")  # nothing sent: a default session after the grace period
        assert ready["agent"] == "assistant" and ready["sample_rate"] == 24000 and ready["turns"] == 0
        ws.send_text(json.dumps({"type": "text", "text": "What is the capital of France?"}))
        done, before = until(ws, "turn_complete")
    assert done["outcome"] == "ok" and done["assistant_text"] == "Paris is the capital."
    kinds = ["<audio>" if isinstance(i, bytes) else i["type"] for i in before]
    assert kinds[0] == "llm_text" and "audio_start" in kinds and kinds[-2:] == ["audio_end", "latency"]
    assert sum(len(i) for i in before if isinstance(i, bytes)) > 0


def test_bad_input_is_an_error_event_and_the_socket_goes_on(client: TestClient) -> None:
    with client.websocket_connect("/ws/voice") as ws:
        ws.send_text(json.dumps({"type": "config", "sample_rate": 16000}))
        assert until(ws, "ready")[0]["sample_rate"] == 16000
        for sent, code, words in [
            ("{oops", "INVALID_ARGUMENT", "malformed JSON"),
            ("42", "INVALID_ARGUMENT", "JSON object"),
            ('{"type": "sing"}', "INVALID_ARGUMENT", "unknown control message type"),
            ('{"type": "text", "text": "' + "x" * 101 + '"}', "INVALID_ARGUMENT", "100-character limit"),
            ('{"type": "config", "session_id": "nope"}', "NOT_FOUND", "unknown session"),
            ('{"type": "config", "agent": "nope"}', "NOT_FOUND", "unknown agent"),
            (b"\x00" * 4098, "INVALID_ARGUMENT", "4096-byte limit"),
            (b"\x00" * 3, "INVALID_ARGUMENT", "odd length"),
            (b"OggS" + b"\x00" * 60, "INVALID_ARGUMENT", "an Ogg file"),
        ]:
            ws.send_bytes(sent) if isinstance(sent, bytes) else ws.send_text(sent)
            error, _ = until(ws, "error")
            assert error["code"] == code and words in error["message"], (sent, error)
        ws.send_text(json.dumps({"type": "text", "text": "still there?"}))
        assert until(ws, "turn_complete")[0]["outcome"] == "ok"


def test_resume_reset_and_end(client: TestClient) -> None:
    with client.websocket_connect("/ws/voice") as ws:
        ws.send_text(json.dumps({"type": "config"}))
        sid = until(ws, "ready")[0]["session_id"]
        ws.send_text(json.dumps({"type": "text", "text": "hello"}))
        until(ws, "turn_complete")
    with client.websocket_connect("/ws/voice") as ws:
        ws.send_text(json.dumps({"type": "config", "session_id": sid, "agent": "portuguese"}))
        assert "agent is chosen only for a new session" in until(ws, "error")[0]["message"]
        ws.send_text(json.dumps({"type": "config", "session_id": sid}))
        ready = until(ws, "ready")[0]
        assert ready["session_id"] == sid and ready["turns"] == 1
        ws.send_text(json.dumps({"type": "reset"}))
        fresh = until(ws, "ready")[0]
        assert fresh["session_id"] != sid and fresh["turns"] == 0
        ws.send_text(json.dumps({"type": "end"}))
        assert until(ws, "ended")[0]["session_id"] == fresh["session_id"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    with client.websocket_connect("/ws/voice") as ws:  # the session that was reset is over
        ws.send_text(json.dumps({"type": "config", "session_id": sid}))
        assert until(ws, "error")[0]["code"] == "NOT_FOUND"


def test_a_full_admission_is_an_unavailable_error_with_retry_after(client: TestClient) -> None:
    hub: FakeHub = client.app.state.runtime.hub  # type: ignore[attr-defined]
    hub.llm.hang_after = 2  # the first turn holds the only slot until it is interrupted
    with client.websocket_connect("/ws/voice") as a, client.websocket_connect("/ws/voice") as b:
        for ws in (a, b):
            ws.send_text(json.dumps({"type": "config"}))
            until(ws, "ready")
        a.send_text(json.dumps({"type": "text", "text": "talk forever"}))
        until(a, "llm_text")
        b.send_text(json.dumps({"type": "text", "text": "me too"}))
        error, _ = until(b, "error")
        assert error["code"] == "UNAVAILABLE" and error["retry_after_s"] >= 1
        assert "max_concurrent_turns" in error["message"]
        a.send_text(json.dumps({"type": "interrupt"}))
        assert until(a, "turn_complete")[0]["outcome"] == "interrupted"
        hub.llm.hang_after = None
        b.send_text(json.dumps({"type": "text", "text": "me too"}))
        assert until(b, "turn_complete")[0]["outcome"] == "ok"


@pytest.mark.parametrize("client", ["s3cret"], indirect=True)
def test_the_api_key_is_required_when_main_has_one(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws/voice") as ws:
        ws.receive_text()   # accepted, then closed with the reason: a browser sees code 1008
    assert refused.value.code == 1008 and "needs an API key or a client token" in refused.value.reason
    with client.websocket_connect("/ws/voice?api_key=s3cret") as ws:
        ws.send_text(json.dumps({"type": "config"}))
        assert until(ws, "ready")[0]["agent"] == "assistant"
    with client.websocket_connect("/ws/voice", headers={"Authorization": "Bearer s3cret"}) as ws:
        ws.send_text(json.dumps({"type": "config"}))
        assert until(ws, "ready")[0]["agent"] == "assistant"
