"""Polling: the bounded per-session event buffer, and the routes in-process (post a turn, long-poll
its events through turn_complete, 409 while it runs, 404 for unknown sessions)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.sessions import PollBuffer, PollRegistry, PollSink, TurnInProgress
from tests.unit.sessions_app import conversation_app


def test_buffer_numbers_events_and_bounds_memory() -> None:
    buf = PollBuffer(max_events=3, max_bytes=10_000)
    for i in range(5):
        assert buf.push({"type": "llm_text", "delta": str(i)}) == i + 1
    out = buf.after(0)
    assert [e["seq"] for e in out["events"]] == [3, 4, 5] and out["missed"] == 2 and out["next"] == 5
    assert buf.after(4)["events"][0]["delta"] == "4" and buf.after(4)["missed"] == 0
    assert buf.after(5)["events"] == [] and buf.after(5)["next"] == 5
    big = PollBuffer(max_events=100, max_bytes=2000)
    for _ in range(10):
        big.push({"type": "audio", "data": "A" * 700})
    assert len(big) == 2 and big.dropped == 8  # bytes bound the buffer too


def test_a_seq_from_a_restarted_buffer_reads_from_the_start() -> None:
    buf = PollBuffer()
    buf.push({"type": "ready"})
    out = buf.after(40)
    assert out["reset"] is True and [e["seq"] for e in out["events"]] == [1]


async def test_long_poll_waits_for_the_next_event() -> None:
    buf = PollBuffer()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, buf.push, {"type": "turn_complete"})
    out = await buf.wait_after(0, 5.0)
    assert [e["type"] for e in out["events"]] == ["turn_complete"]
    t0 = loop.time()
    assert (await buf.wait_after(1, 0.05))["events"] == []
    assert loop.time() - t0 >= 0.04


async def test_sink_turns_audio_into_base64_pcm_events() -> None:
    buf = PollBuffer()
    sink = PollSink(buf, 24000)
    await sink.send_event({"type": "audio_start", "sample_rate": 16000})
    await sink.send_audio(b"\x01\x02\x03\x04")
    ev = buf.after(1)["events"][0]
    assert ev["type"] == "audio" and ev["format"] == "pcm_s16le" and ev["sample_rate"] == 16000
    assert base64.b64decode(ev["data"]) == b"\x01\x02\x03\x04"


async def test_registry_runs_one_turn_per_session() -> None:
    reg = PollRegistry(max_buffers=2, idle_s=60)
    gate = asyncio.Event()
    reg.start("a", gate.wait)
    with pytest.raises(TurnInProgress):
        reg.start("a", gate.wait)
    reg.start("b", gate.wait)
    assert reg.running("a") and reg.running("b")
    gate.set()
    await asyncio.sleep(0.01)
    assert not reg.running("a")
    reg.buffer("a"), reg.buffer("b")
    with pytest.raises(Exception, match="too many polling sessions"):
        reg.buffer("c")
    await reg.close()


async def poll_until_complete(c: httpx.AsyncClient, sid: str, after: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(200):
        r = await c.get(f"/api/poll/{sid}/events", params={"after": after, "wait": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["events"]
        after = body["next"]
        if any(e["type"] == "turn_complete" for e in body["events"]):
            return events
    raise AssertionError(f"no turn_complete; got {[e['type'] for e in events]}")


async def test_a_text_turn_streams_through_long_polling(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, rt):
        assert (await c.post("/api/sessions", json={"session_id": "p1"})).status_code == 201
        rt.hub.llm.delay_s = 0.02  # type: ignore[attr-defined]
        r = await c.post("/api/poll/p1/text", json={"text": "What is the capital of France?"})
        assert r.status_code == 202, r.text
        start = r.json()
        assert start["turn_id"] and start["after"] == 0
        busy = await c.post("/api/poll/p1/text", json={"text": "again"})
        assert busy.status_code == 409
        events = await poll_until_complete(c, "p1", start["after"])
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "turn_complete" and "llm_text" in kinds and "audio" in kinds and "latency" in kinds
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        assert all(e["turn_id"] == start["turn_id"] for e in events)
        assert "".join(e["delta"] for e in events if e["type"] == "llm_text") == "Paris is the capital."
        audio = b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio")
        assert len(audio) > 0 and len(audio) % 2 == 0
        t = (await c.get("/api/sessions/p1/transcript")).json()
        assert t["turns"][0]["turn_id"] == start["turn_id"]


async def test_an_audio_turn_through_polling(tmp_path: Path) -> None:
    async with conversation_app(tmp_path) as (c, _):
        await c.post("/api/sessions", json={"session_id": "p2"})
        r = await c.post("/api/poll/p2/audio?sample_rate=16000", content=b"\x00\x01" * 4000,
                         headers={"content-type": "audio/pcm"})
        assert r.status_code == 202, r.text
        events = await poll_until_complete(c, "p2", r.json()["after"])
        transcript = next(e for e in events if e["type"] == "transcript")
        assert transcript["text"] == "what is the capital of france" and transcript["final"] is True


async def test_polling_refusals(tmp_path: Path) -> None:
    async with conversation_app(tmp_path, max_concurrent_turns=1) as (c, rt):
        assert (await c.post("/api/poll/ghost/text", json={"text": "hi"})).status_code == 404
        assert (await c.get("/api/poll/ghost/events")).status_code == 404
        await c.post("/api/sessions", json={"session_id": "p3"})
        await c.post("/api/sessions", json={"session_id": "p4"})
        assert (await c.get("/api/poll/p3/events", params={"wait": 26})).status_code == 400
        assert (await c.post("/api/poll/p3/text", json={"text": ""})).status_code == 400
        assert (await c.post("/api/poll/p3/audio", content=b"junk", headers={"content-type": "text/plain"})
                ).status_code == 400
        empty = (await c.get("/api/poll/p3/events", params={"wait": 0})).json()
        assert empty["events"] == [] and empty["next"] == 0
        rt.hub.llm.delay_s = 0.2  # type: ignore[attr-defined]
        assert (await c.post("/api/poll/p3/text", json={"text": "hold the only slot"})).status_code == 202
        await asyncio.wait_for(rt.hub.llm.started.wait(), 10)  # type: ignore[attr-defined]
        full = await c.post("/api/poll/p4/text", json={"text": "no room"})
        assert full.status_code == 503 and full.headers["retry-after"]
        await poll_until_complete(c, "p3", 0)
