"""The WebRTC sink: events to the data channel in order (queued until it opens), audio to the playout
buffer, flush, and the transport's share added to each latency report."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from core.gateway.webrtc.audio import InboundAudio, PlayoutBuffer
from core.gateway.webrtc.sink import WebRtcSink


class FakeChannel:
    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def send(self, data: str) -> None:
        self.sent.append(json.loads(data))
        self.changed.set()


async def until_sent(channel: FakeChannel, n: int) -> None:
    async with asyncio.timeout(5):
        while len(channel.sent) < n:
            channel.changed.clear()
            await channel.changed.wait()


def sink() -> WebRtcSink:
    return WebRtcSink(PlayoutBuffer(), InboundAudio())


async def test_events_wait_for_the_channel_then_go_out_in_order() -> None:
    s, channel = sink(), FakeChannel()
    await s.send_event({"type": "ready", "session_id": "a"})
    await s.send_event({"type": "llm_text", "delta": "Hi"})
    s.attach(channel)
    await s.send_event({"type": "turn_complete"})
    await until_sent(channel, 3)
    assert [e["type"] for e in channel.sent] == ["ready", "llm_text", "turn_complete"]
    await s.close()


async def test_audio_goes_to_the_track_buffer_and_flush_empties_it() -> None:
    s, channel = sink(), FakeChannel()
    s.attach(channel)
    await s.send_event({"type": "audio_start", "sample_rate": 48000})
    await s.send_audio(b"\x01\x00" * 4800)
    assert s.buffer.pending_bytes == 9600
    await s.send_event({"type": "flush", "turn_id": "t"})
    assert s.buffer.pending_bytes == 0
    await until_sent(channel, 2)
    assert [e["type"] for e in channel.sent] == ["audio_start", "flush"]  # no audio on the channel
    await s.close()


async def test_a_latency_report_gets_the_first_frame_wait_and_the_resampling_of_the_utterance() -> None:
    s, channel = sink(), FakeChannel()
    s.attach(channel)
    s.inbound.resample_s = 1.0  # before the utterance: not this turn's
    await s.send_event({"type": "speech_started", "utterance": 0})
    s.inbound.resample_s = 1.004
    await s.send_event({"type": "audio_start", "sample_rate": 48000})
    await s.send_audio(b"\x01\x00" * 960)
    await s.send_event({"type": "latency", "turn_id": "t", "report": {"voice_to_voice_s": 1.5}})
    await asyncio.sleep(0.05)
    assert channel.sent[-1]["type"] != "latency"  # waits for the reply's first frame to go out
    s.buffer.pop(now=s.buffer._reply_pushed_at + 0.03)  # type: ignore[operator]
    await until_sent(channel, 3)
    report = channel.sent[-1]["report"]
    assert report == {"voice_to_voice_s": 1.5, "transport_jitter_s": 0.03, "transport_resample_s": 0.004}
    await s.close()


async def test_a_typed_turn_without_audio_reports_no_jitter_and_no_resampling() -> None:
    s, channel = sink(), FakeChannel()
    s.attach(channel)
    s.inbound.resample_s = 3.0
    await s.send_event({"type": "latency", "turn_id": "t", "report": {}})
    await until_sent(channel, 1)
    assert channel.sent[0]["report"] == {"transport_jitter_s": None, "transport_resample_s": 0.0}
    await s.close()


async def test_a_reply_past_the_buffer_limit_is_dropped_with_one_error() -> None:
    s, channel = WebRtcSink(PlayoutBuffer(max_bytes=1000), InboundAudio()), FakeChannel()
    s.attach(channel)
    await s.send_event({"type": "audio_start", "sample_rate": 48000})
    for _ in range(3):
        await s.send_audio(b"\x01\x00" * 400)
    await until_sent(channel, 2)
    errors = [e for e in channel.sent if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "RESOURCE_EXHAUSTED" and errors[0]["stage"] == "send"
    await s.close()


async def test_close_sends_what_is_queued_then_nothing_more() -> None:
    s, channel = sink(), FakeChannel()
    s.attach(channel)
    await s.send_event({"type": "ended", "session_id": "a"})
    await s.close()
    await s.send_event({"type": "llm_text", "delta": "late"})
    await s.send_audio(b"\x01\x00" * 100)
    assert [e["type"] for e in channel.sent] == ["ended"] and s.buffer.pending_bytes == 0


async def test_a_closed_channel_stops_the_writer() -> None:
    s, channel = sink(), FakeChannel()
    channel.readyState = "closed"
    s.attach(channel)
    await s.send_event({"type": "ready"})
    await asyncio.sleep(0.05)
    assert channel.sent == [] and s._writer is not None and s._writer.done()
    await s.close()


async def test_a_client_that_stops_reading_the_channel_is_flagged_for_hang_up() -> None:
    s, channel = sink(), FakeChannel()
    channel.bufferedAmount = 5 * 1024 * 1024
    s.attach(channel)
    await s.send_event({"type": "ready"})
    async with asyncio.timeout(5):
        await s.outbox.overflowed.wait()
    assert channel.sent == []
    await s.close()
