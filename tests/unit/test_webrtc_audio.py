"""WebRTC audio logic: Opus-rate frames to 16 kHz STT frames, the playout buffer, the paced reply track."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from core.gateway.webrtc.audio import STT_FRAME_BYTES, TRACK_FRAME_BYTES, InboundAudio, PlayoutBuffer
from core.gateway.webrtc.tracks import TRACK_FRAME_SAMPLES, ReplyTrack


def stereo_frame(left: np.ndarray, right: np.ndarray, pts: int) -> av.AudioFrame:
    samples = np.stack([left, right], axis=1).astype("<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = 48000, pts, fractions.Fraction(1, 48000)
    return frame


def test_decoded_stereo_48k_becomes_mono_16k_in_20ms_frames() -> None:
    t = np.arange(48000) / 48000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    inbound = InboundAudio()
    out: list[bytes] = []
    for i in range(0, 48000, 960):  # one second of 20 ms frames, the tone on the left only
        out += inbound.push(stereo_frame(tone[i : i + 960], np.zeros(960), i))
    assert out and all(len(f) == STT_FRAME_BYTES for f in out)
    assert 48 <= len(out) <= 50  # the resampler keeps a few samples back
    pcm = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm[1600:]))
    peak_hz = np.argmax(spectrum) * 16000 / (len(pcm) - 1600)
    assert abs(peak_hz - 440) < 5, peak_hz  # same pitch: resampled, not just decimated at the wrong rate
    assert 3000 < np.abs(pcm[1600:]).max() < 5000  # left + silent right, downmixed: half the amplitude
    assert inbound.resample_s > 0


def test_playout_buffer_plays_frames_in_order_pads_and_is_silent_when_idle() -> None:
    buf = PlayoutBuffer()
    assert buf.pop() == bytes(TRACK_FRAME_BYTES)
    buf.start_reply()
    buf.push(b"\x01\x00" * 700, now=10.0)
    buf.push(b"\x02\x00" * 700, now=10.0)
    first = buf.pop(now=10.25)
    assert first == b"\x01\x00" * 700 + b"\x02\x00" * 260
    assert buf.first_wait_s == pytest.approx(0.25) and buf.first_frame_out.is_set()
    second = buf.pop(now=10.27)
    assert second == b"\x02\x00" * 440 + bytes(TRACK_FRAME_BYTES - 880)  # the rest, padded with silence
    assert buf.pending_bytes == 0 and buf.first_wait_s == pytest.approx(0.25)


def test_flush_drops_the_waiting_reply_at_once() -> None:
    buf = PlayoutBuffer()
    buf.start_reply()
    buf.push(b"\x05\x00" * 48000, now=1.0)
    buf.pop(now=1.0)
    assert buf.flush() == 96000 - TRACK_FRAME_BYTES
    assert buf.pending_bytes == 0 and buf.pop() == bytes(TRACK_FRAME_BYTES)


def test_a_reply_flushed_before_it_played_has_no_first_frame_wait() -> None:
    buf = PlayoutBuffer()
    buf.start_reply()
    buf.push(b"\x05\x00" * 960, now=1.0)
    assert buf.awaiting_first_frame and not buf.first_frame_out.is_set()
    buf.flush()
    assert not buf.awaiting_first_frame and buf.first_frame_out.is_set() and buf.first_wait_s is None


def test_a_full_buffer_drops_audio_beyond_its_limit() -> None:
    buf = PlayoutBuffer(max_bytes=4000)
    assert buf.push(b"\x01\x00" * 1500)
    assert not buf.push(b"\x01\x00" * 1000)
    assert buf.dropped_bytes == 2000 and buf.pending_bytes == 3000


async def test_the_reply_track_sends_buffered_audio_then_silence_with_running_timestamps() -> None:
    buf = PlayoutBuffer()
    track = ReplyTrack(buf)
    buf.start_reply()
    buf.push(b"\x10\x00" * TRACK_FRAME_SAMPLES * 2)
    frames = [await track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert all(f.sample_rate == 48000 and f.samples == TRACK_FRAME_SAMPLES and f.layout.name == "mono"
               for f in frames)
    data = [f.to_ndarray().ravel() for f in frames]
    assert (data[0] == 16).all() and (data[1] == 16).all() and (data[2] == 0).all()
    assert track.frames_sent == 3 and buf.first_wait_s is not None
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
