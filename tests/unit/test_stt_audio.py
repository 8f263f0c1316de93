"""STT input decoding and validation: WAV flavours, raw PCM16, and every refusal's reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from core.errors import InvalidArgument
from services.stt.audio import TARGET_RATE, decode_audio
from services.stt.wavfile import read_layout

RATE = TARGET_RATE


def wav_bytes(
    frames: np.ndarray,
    rate: int = RATE,
    *,
    bits: int = 16,
    tag: int = 1,
    extensible: bool = False,
    data_size: int | None = None,
    extra_chunk: bool = False,
) -> bytes:
    """A RIFF/WAVE file of float samples in [-1, 1], shaped (frames, channels)."""
    channels = frames.shape[1]
    if tag == 3:
        payload = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        payload = (frames * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = (frames * 8388607).astype("<i4").reshape(-1)
        payload = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        payload = (frames * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    align = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + b"\x00" * 14
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:
        body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd size: padded to even
    size = len(payload) if data_size is None else data_size
    body += b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(seconds: float = 0.5, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.repeat(mono[:, None], channels, axis=1)


def decode(data: bytes, encoding: str = "auto", **kw: int) -> np.ndarray:
    return decode_audio(data, encoding, max_audio_s=kw.pop("max_audio_s", 60), **kw).samples  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bits", "tag", "extensible"),
    [
        (16, 1, False),
        (8, 1, False),
        (24, 1, False),
        (32, 1, False),
        (32, 3, False),
        (64, 3, False),
        (16, 1, True),
        (32, 3, True),
    ],
)
def test_wav_flavours_decode_to_the_same_float_samples(bits: int, tag: int, extensible: bool) -> None:
    src = tone()
    out = decode(wav_bytes(src, bits=bits, tag=tag, extensible=extensible))
    assert out.dtype == np.float32 and out.shape == (len(src),)
    tolerance = 0.02 if bits == 8 else 1e-3
    assert np.max(np.abs(out - src[:, 0])) < tolerance


def test_stereo_is_mixed_down_and_odd_chunks_are_skipped() -> None:
    src = tone(channels=2)
    src[:, 1] = 0.0
    audio = decode_audio(wav_bytes(src, extra_chunk=True), "wav", max_audio_s=60)
    assert audio.source_channels == 2 and audio.source_format == "wav/pcm16"
    assert np.max(np.abs(audio.samples - src[:, 0] / 2)) < 1e-3


def test_streamed_wav_with_unknown_data_size_reads_what_is_there() -> None:
    src = tone(0.25)
    for size in (0, 0xFFFFFFFF):
        assert len(decode(wav_bytes(src, data_size=size))) == len(src)


def test_trailing_partial_frame_is_dropped() -> None:
    data = wav_bytes(tone(0.1, channels=2)) + b"\x01"
    assert read_layout(data).frames == int(0.1 * RATE)


def test_pcm16_with_declared_rate_and_channels() -> None:
    src = tone(0.5, channels=2)
    pcm = (src * 32767).astype("<i2").tobytes()
    audio = decode_audio(pcm, "pcm_s16le", sample_rate=RATE, channels=2, max_audio_s=60)
    assert audio.duration_s == pytest.approx(0.5)
    assert (audio.source_rate, audio.source_channels, audio.source_format) == (RATE, 2, "pcm_s16le")


def test_other_rates_are_resampled_to_16k() -> None:
    pytest.importorskip("soxr")
    for rate in (8000, 22050, 48000):
        audio = decode_audio(wav_bytes(tone(1.0, rate), rate), "auto", max_audio_s=60)
        assert abs(len(audio.samples) - RATE) <= 2
        assert audio.source_rate == rate


@pytest.mark.parametrize(
    ("data", "encoding", "kw", "reason"),
    [
        (b"", "auto", {}, "audio is empty (0 bytes)"),
        (wav_bytes(tone(0.0)), "auto", {}, "holds no samples"),
        (b"\x00\x01" * 100, "wav", {}, "not a WAV file"),
        (b"\x00\x01\x02", "pcm_s16le", {"sample_rate": RATE}, "not a whole number of 2-byte frames"),
        (b"\x00\x01\x02\x03\x04\x05", "pcm_s16le", {"sample_rate": RATE, "channels": 2}, "4-byte frames"),
        (b"\x00\x01", "pcm_s16le", {}, "needs its sample_rate"),
        (b"\x00\x01", "pcm_s16le", {"sample_rate": 100}, "outside 4000..384000"),
        (b"\x00\x01", "pcm_s16le", {"sample_rate": 10_000_000}, "outside 4000..384000"),
        (b"\x00\x01", "pcm_s16le", {"sample_rate": RATE, "channels": 99}, "channels must be 1..32"),
        (wav_bytes(tone(0.1), 1000), "auto", {}, "WAV sample rate 1000 Hz"),
        (wav_bytes(tone(0.1), tag=0x55), "auto", {}, "format 0x0055 is not supported"),
        (wav_bytes(tone(0.1), bits=12), "auto", {}, "12-bit PCM WAV is not supported"),
        (b"RIFF\x04\x00\x00\x00WAVEdata\x00\x00\x00\x00", "auto", {}, "no 'fmt ' chunk"),
        (wav_bytes(tone(3.0)), "auto", {"max_audio_s": 2}, "3.0 s long, over this service's limit of 2 s"),
        (
            (b"\x00\x00" * RATE * 3),
            "pcm_s16le",
            {"sample_rate": RATE, "max_audio_s": 2},
            "split it into shorter",
        ),
    ],
)
def test_bad_audio_is_refused_with_a_reason(
    data: bytes, encoding: str, kw: dict[str, int], reason: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        decode(data, encoding, **kw)
    assert reason in e.value.message
    assert e.value.http_status == 400


def test_garbage_with_unspecified_encoding_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="WAV"):
        decode(b"this is certainly not audio " * 50)
