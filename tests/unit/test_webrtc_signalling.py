"""WebRTC signalling without a network: body validation, and the routes' 400/404/503 on the real app
(FakeHub services); the data channel's control messages (``commit``) through the shared VoiceEndpoint, and
the session a switch leaves on the transport's other tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from core.config import load_settings
from core.config.models import GatewayConfig, IceServer, WebRtcConfig
from core.context import GlobalContext, Paths, ProcessContext
from core.conversation.control import VoiceConfig
from core.errors import InvalidArgument
from core.gateway.app import agents_dir, attach_conversation, install_error_handlers
from core.gateway.routes import webrtc
from core.gateway.runtime import MainRuntime
from core.gateway.voice_endpoint import VoiceEndpoint
from core.gateway.webrtc import parse_candidates, parse_offer
from core.logs import session_id_var
from core.managers.remote import RemoteServices
from core.sessions import load_agents
from tests.helpers.conversation_fakes import FakeHub

ROOT = Path(__file__).resolve().parents[2]
SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=mid:0\r\n"
    "m=application 9 DTLS/SCTP 5000\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
)


def offer(**fields: Any) -> bytes:
    return json.dumps({"sdp": SDP, "type": "offer", **fields}).encode()


@pytest.mark.parametrize(("body", "words"), [
    (b"{", "not JSON"),
    (b"[]", "invalid offer"),
    (json.dumps({"type": "offer"}).encode(), "sdp: Field required"),
    (json.dumps({"sdp": SDP, "type": "answer"}).encode(), "type must be 'offer'"),
    (json.dumps({"sdp": SDP, "type": "offer", "extra": 1}).encode(), "extra: Extra inputs"),
    (json.dumps({"sdp": "m=audio", "type": "offer"}).encode(), "start with 'v=0'"),
    (json.dumps({"sdp": SDP.replace("m=audio", "m=video"), "type": "offer"}).encode(), "no audio m-line"),
    (json.dumps({"sdp": SDP.replace("a=sendrecv", "a=recvonly"), "type": "offer"}).encode(), "is recvonly"),
    (json.dumps({"sdp": SDP.replace("a=sendrecv", "a=sendonly"), "type": "offer"}).encode(), "is sendonly"),
    (json.dumps({"sdp": SDP.replace("a=sendrecv", "a=inactive"), "type": "offer"}).encode(), "is inactive"),
    (json.dumps({"sdp": SDP.split("m=application", maxsplit=1)[0], "type": "offer"}).encode(), "no data channel"),
    (offer(config={"sample_rate": 3}), "sample_rate"),
    (offer(config={"end_silence_ms": "soon"}), "end_silence_ms"),
    (offer(config={"colour": "blue"}), "colour"),
])
def test_a_bad_offer_says_what_to_send(body: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_offer(body, max_text_chars=100)
    assert words in e.value.message


def test_a_good_offer_carries_its_voice_config() -> None:
    parsed = parse_offer(offer(config={"language": "pt", "partials": True, "type": "ignored"}), max_text_chars=100)
    assert parsed.sdp == SDP and parsed.voice.language == "pt" and parsed.voice.partials
    assert parse_offer(offer(), max_text_chars=100).voice.session_id is None


def test_trickled_candidates_parse_and_an_empty_one_ends_them() -> None:
    body = {"candidates": [
        {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0",
         "sdpMLineIndex": 0, "usernameFragment": "abc"},
        {"candidate": "", "sdpMid": "0"},
    ]}
    first, end = parse_candidates(json.dumps(body).encode())
    assert first is not None and (first.ip, first.port, first.type, first.sdpMid) == ("127.0.0.1", 50000, "host", "0")
    assert end is None


@pytest.mark.parametrize(("body", "words"), [
    (b"nope", "not JSON"),
    (json.dumps({"candidate": "x"}).encode(), "candidates: Field required"),
    (json.dumps({"candidates": [{"candidate": "candidate:1 1 udp"}]}).encode(), "sdpMid or sdpMLineIndex"),
    (json.dumps({"candidates": [{"candidate": "candidate:1 1 udp x", "sdpMid": "0"}]}).encode(),
     "not an ICE candidate"),
    (json.dumps({"candidates": [{"candidate": "c", "sdpMid": "0"}] * 65}).encode(), "at most 64"),
])
def test_bad_candidates_say_what_to_send(body: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_candidates(body)
    assert words in e.value.message


@contextlib.asynccontextmanager
async def runtime(tmp_path: Path, webrtc_config: WebRtcConfig | None = None) -> AsyncIterator[MainRuntime]:
    """A main runtime with the real conversation layer on the scripted FakeHub."""
    base = load_settings(ROOT / "config", env={})
    settings = base.model_copy(update={"gateway": GatewayConfig(webrtc=webrtc_config or WebRtcConfig())})
    g = GlobalContext.create(settings, Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "c", venvs=tmp_path))
    ctx = ProcessContext(global_=g, name="main")
    rt = MainRuntime(ctx=ctx, supervisor=None, remote=RemoteServices(ctx),  # type: ignore[arg-type]
                     hub=FakeHub())  # type: ignore[arg-type]
    await attach_conversation(rt, load_agents(agents_dir(g)))
    try:
        yield rt
    finally:
        await rt.close_conversation()
        await rt.proxy_client.aclose()


def webrtc_app(tmp_path: Path, config: WebRtcConfig | None = None) -> FastAPI:
    """The webrtc router on its own app (its lifespan builds the peer registry inside the app's)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime(tmp_path, config) as rt:
            app.state.runtime = rt
            yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(webrtc.router)
    return app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = WebRtcConfig(
        max_peers=1, ice_servers=[IceServer(urls=["turn:turn.example.org:3478"], username="u", credential="p")]
    )
    app = webrtc_app(tmp_path, config)
    with TestClient(app) as c:
        yield c


def test_config_lists_the_ice_servers(client: TestClient) -> None:
    r = client.get("/api/webrtc/config")
    assert r.json() == {"ice_servers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}


def test_routes_answer_400_404_and_503(client: TestClient) -> None:
    r = client.post("/api/offer", content=b"{")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    for method in ("PATCH", "DELETE"):
        r = client.request(method, "/api/offer/unknown", json={"candidates": []})
        assert r.status_code == 404 and "POST /api/offer" in r.json()["error"]["message"]
    peers = client.app.state.webrtc  # type: ignore[attr-defined]
    peers.peers["busy"] = object()  # the one allowed call is taken
    r = client.post("/api/offer", content=offer())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "max_peers" in r.json()["error"]["message"]
    del peers.peers["busy"]
    stats = client.get("/api/webrtc/stats").json()
    assert stats["peers"] == 0 and stats["threads"] >= 1 and stats["fds"] > 0 and stats["tasks"] >= 1


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def send_audio(self, pcm: bytes) -> None:
        pass


async def test_commit_is_a_control_message_only_where_the_transport_takes_it(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        await _commit_cases(rt)


async def _commit_cases(rt: MainRuntime) -> None:
    ws_like, rtc_like = Recorder(), Recorder()
    ws = VoiceEndpoint(rt, ws_like)
    rtc = VoiceEndpoint(rt, rtc_like, out_rate=48000, commit=True, name="webrtc")
    await ws.guard(ws.control('{"type": "commit"}'))
    assert ws_like.events[-1]["message"].endswith("use one of config, text, interrupt, reset, end")
    await rtc.guard(rtc.control('{"type": "commit", "now": true}'))
    assert 'send {"type": "commit"}' in rtc_like.events[-1]["message"]
    await rtc.guard(rtc.control('{"type": "commit"}'))
    assert rtc_like.events[-1]["type"] == "ready" and rtc_like.events[-1]["sample_rate"] == 48000
    await rtc.guard(rtc.control('{"type": "config", "sample_rate": 16000}'))
    assert rtc_like.events[-1]["type"] == "ready" and rtc_like.events[-1]["sample_rate"] == 48000
    await rtc.guard(rtc.control('{"type": "shout"}'))
    assert "use one of config, text, interrupt, reset, end, commit" in rtc_like.events[-1]["message"]
    await rtc.close()
    await ws.close()


async def test_after_a_session_switch_the_microphone_task_streams_and_logs_under_the_new_session(
    tmp_path: Path,
) -> None:
    """WebRTC feeds the microphone from one task and reads control messages in another (as peer.py does):
    a ``reset`` in the control task must not leave the STT stream the microphone opens on the old session."""
    async with runtime(tmp_path) as rt:
        seen: list[tuple[str, str]] = []  # (the stream task's session_id_var, the x-session-id it sends)
        stream = rt.hub.stream

        def recording(service: str, method: str, payload: Any = None, **kw: Any) -> Any:
            if method == "StreamingRecognize":
                seen.append((session_id_var.get(), kw.get("metadata", {}).get("x-session-id", "")))
            return stream(service, method, payload, **kw)

        rt.hub.stream = recording  # type: ignore[method-assign]
        endpoint = VoiceEndpoint(rt, Recorder(), out_rate=48000, commit=True, name="webrtc")
        await endpoint.configure(VoiceConfig())  # the offer's task
        first = endpoint.voice.session_id
        frames: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def microphone() -> None:  # started after the answer, so its context names the first session
            while (pcm := await frames.get()) is not None:
                await endpoint.audio(pcm)

        async def wait_streams(n: int) -> None:
            for _ in range(400):
                if len(seen) >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{len(seen)} STT streams opened, expected {n}")

        mic = asyncio.create_task(microphone())
        frames.put_nowait(b"\x10\x00" * 320)
        await wait_streams(1)
        await asyncio.create_task(endpoint.control('{"type": "reset"}'))  # the control reader's task
        second = endpoint.voice.session_id
        assert second != first
        frames.put_nowait(b"\x10\x00" * 320)
        await wait_streams(2)
        frames.put_nowait(None)
        await mic
        await endpoint.close()
        assert seen == [(first, first), (second, second)]
