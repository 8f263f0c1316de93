"""WebRTC (``POST /api/offer``) on a real main.py with the real STT, LLM and TTS, driven by an aiortc client.

Main and the client both run inside a loopback-only network namespace (ICE gathers on every
interface; test traffic stays on ``lo``): the module fixture enters it in the main thread and
spawns main there; the async tests run their client on that same thread. Covers a spoken
question sent as the client's microphone track (final transcript, streamed text, reply audio on
the track that Whisper hears as the reply, the latency report with the transport's share), a
typed turn, push-to-talk ``commit``, bad signalling (400, 404, 503 + Retry-After), a peer that
never connects (timeout), and the leak check of the issue: 20 calls dropped without goodbye
(client connections closed, and client processes killed) leave main's asyncio tasks, threads
and file descriptors where they were (the loop's default executor, whose idle workers stay by
design, is checked against its fixed maximum instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection

from tests.helpers.netns import interfaces, loopback_netns, netns_unavailable
from tests.helpers.speech import Pcm, convert, pcm_to_wav, speech_bytes
from tests.helpers.stack import ROOT, MainProcess, make_config_dir, running_main, stack_env
from tests.helpers.text import word_error_rate
from tests.helpers.webrtc_client import RATE, MicTrack, WebRtcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

QUESTION = "What is the capital of France?"
MAX_PEERS = 5
CONNECT_TIMEOUT_S = 4
DROPPED = 20
SETTLE_S = 120.0


def speech48(text: str) -> bytes:
    return convert(speech_bytes(text), RATE, 1).data


def silence48(seconds: float) -> bytes:
    return b"\x00\x00" * int(RATE * seconds)


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    if why := netns_unavailable():
        pytest.skip(f"WebRTC needs a loopback-only network namespace: {why}")
    var = tmp_path_factory.mktemp("webrtc")

    def edit(doc: dict[str, Any]) -> None:
        doc["gateway"]["webrtc"].update(max_peers=MAX_PEERS, connect_timeout_s=CONNECT_TIMEOUT_S,
                                        disconnected_grace_s=2)

    config = make_config_dir(var / "config", edit)
    with loopback_netns("uvwebrtc"):
        assert interfaces() == ["lo"]
        with running_main(var, stack_env(var, config), "webrtc") as m:
            yield m


async def metric(main: MainProcess, name: str) -> float:
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(main.url + "/metrics")).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def stats(main: MainProcess) -> dict[str, int]:
    """Main's counts; ``threads`` leaves out the event loop's default executor (``pool``): aiortc encodes
    in it, and its idle workers stay by design, up to ThreadPoolExecutor's maximum, whatever the calls."""
    async with httpx.AsyncClient(timeout=30, headers={"Connection": "close"}) as http:
        r = await http.get(main.url + "/api/webrtc/stats")
    assert r.status_code == 200, r.text
    doc = r.json()
    pool = int(doc["thread_names"].get("asyncio", 0))
    return {"peers": doc["peers"], "tasks": doc["tasks"], "threads": doc["threads"] - pool, "pool": pool,
            "fds": doc["fds"]}


async def transcribe(main: MainProcess, pcm: bytes, rate: int) -> str:
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(f"{main.url}/v1/audio/transcriptions", data={"language": "en"},
                            files={"file": ("reply.wav", pcm_to_wav(Pcm(pcm, rate, 1)), "audio/wav")})
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


async def offer_sdp(*, mic: bool = True, channel: bool = True) -> str:
    """An offer as a browser would make it, with or without the microphone track and the data channel."""
    pc = RTCPeerConnection()
    if mic:
        pc.addTrack(MicTrack())
    if channel:
        pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def assert_send_buffer_wait(report: dict[str, Any]) -> None:
    """``transport_jitter_s`` is always in a WebRTC report; None only when the first reply frame did not go
    out before the report (a loaded machine), otherwise a wait, never negative."""
    assert "transport_jitter_s" in report, report
    assert report["transport_jitter_s"] is None or report["transport_jitter_s"] >= 0, report


async def test_a_spoken_question_over_the_track_gets_a_spoken_answer(main_proc: MainProcess) -> None:
    async with WebRtcClient.open(main_proc.url) as c:
        ready = c.of("ready")[0]
        assert ready["sample_rate"] == 48000 and ready["session_id"] == c.session_id
        c.speak(silence48(0.3) + speech48(QUESTION))
        done = await c.wait("turn_complete")
        await asyncio.sleep(1.0)  # the tail of the reply is still playing out on the track
    final = [e for e in c.of("transcript") if e["final"]][-1]
    assert word_error_rate(QUESTION, final["text"]) <= 0.25, final
    reply = c.text()
    assert done["outcome"] == "ok" and reply.strip() and done["assistant_text"] == reply.strip(), done
    assert c.of("audio_start")[0]["sample_rate"] == 48000
    assert c.loud_frames > 25, f"only {c.loud_frames} non-silent reply frames of {c.frames}"
    heard = await transcribe(main_proc, bytes(c.audio), RATE)
    assert word_error_rate(reply, heard) <= 0.35, (reply, heard)
    report = c.of("latency")[0]["report"]
    assert report["voice_to_voice_s"] > 0 and report["vad_s"] > 0.3, report
    assert_send_buffer_wait(report)
    assert report["transport_resample_s"] > 0, report


async def test_a_typed_turn_and_push_to_talk_commit(main_proc: MainProcess) -> None:
    async with WebRtcClient.open(main_proc.url, {"end_silence_ms": 3000}) as c:
        c.send({"type": "text", "text": "Say hello."})
        typed = await c.wait("turn_complete")
        assert typed["outcome"] == "ok" and typed["user_text"] == "Say hello.", typed
        report = c.of("latency")[0]["report"]
        assert report["transport_resample_s"] == 0.0, report
        assert_send_buffer_wait(report)
        mark = len(c.events)
        c.speak(speech48(QUESTION))
        await c.mic.speech_done.wait()
        c.send({"type": "commit"})  # long end silence configured: only the commit ends the turn this soon
        spoken = await c.wait("turn_complete", since=mark, timeout=60)
        c.send({"type": "dance"})
        error = await c.wait("error", since=mark)
    assert word_error_rate(QUESTION, spoken["user_text"]) <= 0.25, spoken
    assert error["code"] == "INVALID_ARGUMENT" and "commit" in error["message"], error


async def test_bad_signalling_gets_4xx_that_say_what_to_send(main_proc: MainProcess) -> None:
    url = main_proc.url
    no_audio, no_channel, good = await offer_sdp(mic=False), await offer_sdp(channel=False), await offer_sdp()
    async with httpx.AsyncClient(timeout=30) as http:
        cases: list[tuple[Any, int, str]] = [
            (b"{oops", 400, "not JSON"),
            ({"type": "offer"}, 400, "sdp"),
            ({"sdp": "v=0\r\n", "type": "answer"}, 400, "type must be 'offer'"),
            ({"sdp": "hello", "type": "offer"}, 400, "start with 'v=0'"),
            ({"sdp": no_audio, "type": "offer"}, 400, "no audio m-line"),
            ({"sdp": no_channel, "type": "offer"}, 400, "createDataChannel('events')"),
            ({"sdp": good, "type": "offer", "config": {"language": "x" * 40}}, 400, "language"),
            ({"sdp": good, "type": "offer", "config": {"sample_rat": 1}}, 400, "sample_rat"),
            ({"sdp": good, "type": "offer", "config": {"session_id": "no-such-session"}}, 404, "unknown session"),
            ({"sdp": good, "type": "offer", "config": {"agent": "nobody"}}, 404, "unknown agent"),
        ]
        for body, status, words in cases:
            r = await (http.post(f"{url}/api/offer", content=body) if isinstance(body, bytes)
                       else http.post(f"{url}/api/offer", json=body))
            assert r.status_code == status and words in r.json()["error"]["message"], (body, r.text)
        for method in ("PATCH", "DELETE"):
            r = await http.request(method, f"{url}/api/offer/nope", json={"candidates": []})
            assert r.status_code == 404 and "POST /api/offer" in r.json()["error"]["message"], r.text
        async with WebRtcClient.open(url, http=http) as c:
            r = await http.patch(f"{url}/api/offer/{c.pc_id}", json={"candidates": [{"candidate": "candidate:x"}]})
            assert r.status_code == 400 and "sdpMid" in r.json()["error"]["message"], r.text
            r = await http.patch(f"{url}/api/offer/{c.pc_id}",
                                 json={"candidates": [{"candidate": "candidate:bogus", "sdpMid": "0"}]})
            assert r.status_code == 400 and "not an ICE candidate" in r.json()["error"]["message"], r.text
            r = await http.patch(f"{url}/api/offer/{c.pc_id}",
                                 json={"candidates": [{"candidate": "", "sdpMid": "0"}]})
            assert r.status_code == 204, r.text
            c.send({"type": "text", "text": "Say yes."})
            assert (await c.wait("turn_complete"))["outcome"] == "ok"  # the call survived it all
        async with contextlib.AsyncExitStack() as stack:
            calls = [await stack.enter_async_context(WebRtcClient.open(url, http=http)) for _ in range(MAX_PEERS)]
            extra = WebRtcClient(url, http)
            await extra.pc.setLocalDescription(await extra.pc.createOffer())
            r = await http.post(f"{url}/api/offer", json={"sdp": extra.pc.localDescription.sdp, "type": "offer"})
            await extra.close(delete=False)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            assert "max_peers" in r.json()["error"]["message"]
            assert (await stats(main_proc))["peers"] == len(calls)


async def test_a_peer_that_never_connects_times_out(main_proc: MainProcess) -> None:
    before = await metric(main_proc, 'ultravox_webrtc_peers_total{reason="timeout"}')
    c = WebRtcClient(main_proc.url, httpx.AsyncClient(timeout=30))
    await c.pc.setLocalDescription(await c.pc.createOffer())
    r = await c.http.post(f"{main_proc.url}/api/offer", json={"sdp": c.pc.localDescription.sdp, "type": "offer"})
    assert r.status_code == 200, r.text
    await c.close(delete=False)  # never applied the answer: ICE never starts
    await c.http.aclose()
    deadline = time.monotonic() + CONNECT_TIMEOUT_S + 30
    while await metric(main_proc, 'ultravox_webrtc_peers_total{reason="timeout"}') < before + 1:
        assert time.monotonic() < deadline, "the unconnected peer was not dropped"
        await asyncio.sleep(0.5)


async def _settled(main: MainProcess) -> dict[str, int]:
    """Stats once two readings a second apart agree (keep-alive sockets and short tasks come and go)."""
    last = await stats(main)
    for _ in range(30):
        await asyncio.sleep(1.0)
        now = await stats(main)
        if now == last and now["peers"] == 0:
            return now
        last = now
    return last


def _hold(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.webrtc_client", url, "--mode", "hold"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _drop_connections(url: str) -> None:
    """Open MAX_PEERS calls at a time and drop them without DELETE: closed in-process clients, then
    killed client processes (the server only notices those when ICE consent expires)."""
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(DROPPED // MAX_PEERS - 1):
            calls = [WebRtcClient(url, http) for _ in range(MAX_PEERS)]
            await asyncio.gather(*(c.connect() for c in calls))
            calls[0].speak(speech48("Hello there."))
            await asyncio.sleep(1.0)
            await asyncio.gather(*(c.close(delete=False) for c in calls))
            await _wait_peers(url, 0, 60)
    procs = [_hold(url) for _ in range(MAX_PEERS)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.to_thread(p.stdout.readline)
            assert b"pc_id" in line, (line, p.stderr.read() if p.poll() is not None and p.stderr else b"")
        for p in procs:
            p.kill()
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(10)


async def _wait_peers(url: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30, headers={"Connection": "close"}) as http:
        while (peers := (await http.get(url + "/api/webrtc/stats")).json()["peers"]) != n:
            assert time.monotonic() < deadline, f"{peers} peers still open, expected {n}"
            await asyncio.sleep(0.5)


async def test_dropped_peers_release_every_task_thread_and_fd(main_proc: MainProcess) -> None:
    url = main_proc.url
    async with httpx.AsyncClient(timeout=60) as http:  # warm up: codecs, executor threads, first sessions
        warm = [WebRtcClient(url, http) for _ in range(MAX_PEERS)]
        await asyncio.gather(*(c.connect() for c in warm))
        await asyncio.sleep(1.0)
        await asyncio.gather(*(c.close() for c in warm))
    await _wait_peers(url, 0, 60)
    baseline = await _settled(main_proc)
    ended_before = await metric(main_proc, 'ultravox_webrtc_peers_total{reason="disconnected"}')
    await _drop_connections(url)
    await _wait_peers(url, 0, 90)  # the killed ones: ICE consent expires after ~30 s
    deadline = time.monotonic() + SETTLE_S
    while True:
        now = await _settled(main_proc)
        leaked = {k: (baseline[k], now[k]) for k in ("tasks", "threads", "fds") if now[k] > baseline[k]}
        if not leaked:
            break
        assert time.monotonic() < deadline, f"not back to the baseline (before, after): {leaked}"
    assert now["pool"] <= min(32, (os.cpu_count() or 1) + 4), now
    ended = await metric(main_proc, 'ultravox_webrtc_peers_total{reason="disconnected"}') - ended_before
    assert ended == DROPPED, f"{ended} peers ended as disconnected, expected {DROPPED}"
    assert await metric(main_proc, "ultravox_webrtc_peers_active") == 0
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(url + "/health")).json()["status"] == "ok"
