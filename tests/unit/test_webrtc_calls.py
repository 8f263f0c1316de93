"""WebRTC calls end to end in one process: real aiortc peers on both sides, the real routes, sessions and
orchestrator on the scripted FakeHub, inside a loopback-only network namespace.

Covers the cleanup bookkeeping: every way a call ends (DELETE, ``end``, the client vanishing, never
connecting, shutdown) is counted under its reason, the gauge follows, and the call's tasks are gone;
and a barge-in (``interrupt``) empties the reply track's buffer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from core.config.models import WebRtcConfig
from core.conversation.control import VoiceConfig
from core.gateway.runtime import MainRuntime
from core.gateway.voice_endpoint import VoiceEndpoint
from core.gateway.webrtc import PeerRegistry
from core.gateway.webrtc.peer import MAX_WAITING_MESSAGES
from tests.helpers.conversation_fakes import FakeHub
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.webrtc_client import WebRtcClient
from tests.unit.test_webrtc_signalling import webrtc_app

pytestmark = [
    pytest.mark.skipif(bool(netns_unavailable()), reason=f"WebRTC needs a loopback namespace: {netns_unavailable()}"),
    pytest.mark.timeout(120),
]
URL = "http://main"


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **config: float) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = webrtc_app(tmp_path, WebRtcConfig(**config))  # type: ignore[arg-type]
    with loopback_netns("uvunit"):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=URL, timeout=30) as http:
                yield app, http


def ended(app: FastAPI, reason: str) -> float:
    rt: MainRuntime = app.state.runtime
    return rt.ctx.registry.get_sample_value("ultravox_webrtc_peers_total", {"reason": reason}) or 0.0


def active(app: FastAPI) -> float:
    rt: MainRuntime = app.state.runtime
    return rt.ctx.registry.get_sample_value("ultravox_webrtc_peers_active") or 0.0


async def until_closed(peers: PeerRegistry, n: int = 0) -> None:
    """Closes finish in aiortc's own callbacks: poll (30 s at most)."""
    for _ in range(600):
        if len(peers.peers) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(peers.peers)} calls still open, expected {n}")


def call_tasks() -> set[str]:
    """Names of running tasks that belong to a call (ours are named webrtc-*, the turn's voice-turn-*)."""
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("webrtc-", "voice-turn-"))}


async def test_delete_and_end_close_the_call_and_count_client_end(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http):
        peers: PeerRegistry = app.state.webrtc
        async with WebRtcClient.open(URL, http=http) as c:
            assert active(app) == 1 and call_tasks()
            c.send({"type": "text", "text": "hello"})
            assert (await c.wait("turn_complete", timeout=20))["outcome"] == "ok"
        await until_closed(peers)
        assert ended(app, "client_end") == 1 and active(app) == 0 and not call_tasks()
        async with WebRtcClient.open(URL, http=http, delete=False) as c:
            c.send({"type": "end"})
            bye = await c.wait("ended", timeout=20)
            assert bye["session_id"] == c.session_id
            await until_closed(peers)
        assert ended(app, "client_end") == 2 and not call_tasks()
        rt: MainRuntime = app.state.runtime
        with pytest.raises(Exception, match="has ended"):
            rt.sessions.get(c.session_id)  # `end` ended the session; DELETE keeps it


async def test_a_client_that_vanishes_is_dropped_as_disconnected(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http):
        c = WebRtcClient(URL, http)
        await c.connect()
        await c.close(delete=False)  # no goodbye
        await until_closed(app.state.webrtc)
        assert ended(app, "disconnected") == 1 and active(app) == 0 and not call_tasks()


async def test_a_peer_that_never_connects_is_dropped_as_timeout(tmp_path: Path) -> None:
    async with serving(tmp_path, connect_timeout_s=0.5) as (app, http):
        c = WebRtcClient(URL, http)
        await c.pc.setLocalDescription(await c.pc.createOffer())
        r = await http.post("/api/offer", json={"sdp": c.pc.localDescription.sdp, "type": "offer"})
        assert r.status_code == 200
        assert len(app.state.webrtc.peers) == 1
        await until_closed(app.state.webrtc)
        await c.close(delete=False)
        assert ended(app, "timeout") == 1 and not call_tasks()


async def test_shutdown_ends_every_call(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http):
        calls = [WebRtcClient(URL, http) for _ in range(2)]
        await asyncio.gather(*(c.connect() for c in calls))
        rt: MainRuntime = app.state.runtime
        await rt.close_conversation()  # what the lifespan's shutdown runs first
        assert ended(app, "shutdown") == 2 and active(app) == 0 and not call_tasks()
        for c in calls:
            await c.close(delete=False)


async def test_interrupt_flushes_the_reply_track_at_once(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http):
        hub: FakeHub = app.state.runtime.hub
        hub.llm.tokens = ["word "] * 400 + ["."]  # 20 s of fake speech
        async with WebRtcClient.open(URL, http=http) as c:
            c.send({"type": "text", "text": "talk"})
            await c.wait("audio_start", timeout=20)
            peer = next(iter(app.state.webrtc.peers.values()))
            for _ in range(2000):  # the reply's audio reaches the track's buffer
                if peer.buffer.pending_bytes:
                    break
                await asyncio.sleep(0.01)
            assert peer.buffer.pending_bytes > 0
            c.send({"type": "interrupt"})
            await c.wait("flush", timeout=20)
            assert peer.buffer.pending_bytes == 0
            done = await c.wait("turn_complete", timeout=20)
            assert done["outcome"] == "interrupted"


async def test_a_flood_of_control_messages_is_cut_with_one_error_and_the_call_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http), WebRtcClient.open(URL, http=http) as c:
        peer = next(iter(app.state.webrtc.peers.values()))
        for _ in range(MAX_WAITING_MESSAGES + 20):  # all at once, before the reader runs
            peer._on_message('{"type": "interrupt"}')
        error = await c.wait("error", timeout=20)
        assert error["code"] == "RESOURCE_EXHAUSTED" and "one at a time" in error["message"]
        c.send({"type": "text", "text": "still here?"})
        assert (await c.wait("turn_complete", timeout=20))["outcome"] == "ok"
        assert len(c.of("error")) == 1


async def test_an_empty_binary_message_is_a_wrong_message_not_an_overflow(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, http), WebRtcClient.open(URL, http=http) as c:
        c.channel.send(b"")
        error = await c.wait("error", timeout=20)
        assert error["code"] == "INVALID_ARGUMENT" and "JSON text messages" in error["message"]


@pytest.mark.parametrize("how", ["end", "close_all"])
async def test_a_cancelled_close_still_finishes_and_frees_the_slot(tmp_path: Path, how: str) -> None:
    async with serving(tmp_path, max_peers=1) as (app, http):
        peers: PeerRegistry = app.state.webrtc
        c = WebRtcClient(URL, http)
        await c.connect()
        closer = asyncio.create_task(peers.end(c.pc_id) if how == "end" else peers.close_all())
        for _ in range(3):  # into the close, past its first awaits
            await asyncio.sleep(0)
        closer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closer
        await until_closed(peers)
        reason = "client_end" if how == "end" else "shutdown"
        assert ended(app, reason) == 1 and active(app) == 0 and not call_tasks()
        await c.close(delete=False)
        async with WebRtcClient.open(URL, http=http):  # the one slot is free again
            assert active(app) == 1


@pytest.mark.parametrize("where", ["before", "after"])
async def test_a_close_while_answering_refuses_the_offer_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    configure = VoiceEndpoint.configure

    async def gated(self: VoiceEndpoint, voice: VoiceConfig) -> None:
        if where == "after":
            await configure(self, voice)
        entered.set()
        await release.wait()
        if where == "before":
            await configure(self, voice)

    monkeypatch.setattr(VoiceEndpoint, "configure", gated)
    async with serving(tmp_path) as (app, http):
        peers: PeerRegistry = app.state.webrtc
        c = WebRtcClient(URL, http)
        await c.pc.setLocalDescription(await c.pc.createOffer())
        offer = asyncio.create_task(http.post("/api/offer", json={"sdp": c.pc.localDescription.sdp, "type": "offer"}))
        await asyncio.wait_for(entered.wait(), 30)
        (peer,) = peers._opening
        closing = asyncio.create_task(peers.close_all())  # shutdown while the offer is being answered
        await asyncio.sleep(0.1)
        release.set()
        r = await offer
        await closing
        hint = "connect again" if where == "before" else "send a new offer"  # the endpoint's or the peer's check
        assert r.status_code == 503 and hint in r.json()["error"]["message"]
        assert not peers.peers and not peers._opening and active(app) == 0 and ended(app, "shutdown") == 0
        assert not call_tasks()
        assert peer.endpoint.conv is None or peer.endpoint.conv.closed, "a conversation nobody will close"
        await c.close(delete=False)
