"""TTS audio output: format checks, output rates, encoding that decodes back, resampling, trimming."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from core.errors import InvalidArgument
from services.tts.audio import (
    FORMATS,
    check_format,
    encode,
    output_rate,
    resample,
    silence,
    to_pcm16,
    trim_silence,
    writable_formats,
)


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_this_libsndfile_writes_every_format() -> None:
    assert writable_formats() == ("pcm", "wav", "flac", "mp3", "opus")


@pytest.mark.parametrize(("name", "expected"), [("", "pcm"), ("PCM", "pcm"), (" wav ", "wav"), ("opus", "opus")])
def test_check_format(name: str, expected: str) -> None:
    assert check_format(name).name == expected


@pytest.mark.parametrize("name", ["aac", "ogg", "m4a", "wave"])
def test_unknown_format_lists_the_usable_ones(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"not supported; use one of: pcm, wav, flac, mp3, opus"):
        check_format(name)


@pytest.mark.parametrize(
    ("fmt", "requested", "engine", "expected"),
    [
        ("pcm", 0, 22050, 22050),
        ("wav", 16000, 24000, 16000),
        ("flac", 48000, 22050, 48000),
        ("mp3", 0, 22050, 22050),
        ("mp3", 44100, 24000, 44100),
        ("opus", 0, 24000, 24000),
        ("opus", 0, 22050, 24000),  # Piper's rate is not an Opus rate: resample up
        ("opus", 48000, 22050, 48000),
    ],
)
def test_output_rate(fmt: str, requested: int, engine: int, expected: int) -> None:
    assert output_rate(FORMATS[fmt], requested, engine) == expected


@pytest.mark.parametrize(
    ("fmt", "requested", "reason"),
    [
        ("opus", 22050, "not possible in opus; use one of 8000, 12000, 16000, 24000, 48000"),
        ("mp3", 96000, "not possible in mp3"),
        ("wav", 4000, "outside 8000..96000 Hz"),
        ("pcm", 192000, "outside 8000..96000 Hz"),
    ],
)
def test_bad_output_rate(fmt: str, requested: int, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        output_rate(FORMATS[fmt], requested, 24000)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_containers_decode_back_at_their_rate(fmt: str, rate: int) -> None:
    samples = tone(1.0, rate)
    data = encode(samples, rate, FORMATS[fmt])
    decoded, decoded_rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert decoded_rate == rate
    assert len(decoded) / rate == pytest.approx(1.0, abs=0.08)  # mp3/opus pad a few ms
    if fmt in ("wav", "flac"):
        assert np.max(np.abs(decoded - samples)) < 1e-3
    else:  # lossy, but the tone survives
        spectrum = np.abs(np.fft.rfft(decoded))
        assert abs(np.argmax(spectrum) * rate / len(decoded) - 440) < 5


def test_pcm_is_raw_little_endian_int16() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.5], dtype=np.float32)
    raw = encode(samples, 24000, FORMATS["pcm"])
    assert raw == to_pcm16(samples)
    assert np.frombuffer(raw, "<i2").tolist() == [0, 16384, -16384, 32767, -32767]


def test_resample_keeps_duration_and_tone() -> None:
    out = resample(tone(1.0, 22050), 22050, 24000)
    assert out.dtype == np.float32 and abs(len(out) - 24000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 24000 / len(out) - 440) < 2
    same = tone(0.1, 24000)
    assert resample(same, 24000, 24000) is not None and np.array_equal(resample(same, 24000, 24000), same)


def test_trim_silence_keeps_a_little_pad() -> None:
    rate = 24000
    clip = np.concatenate([silence(0.5, rate), tone(0.2, rate), silence(0.5, rate)])
    trimmed = trim_silence(clip, rate, pad_s=0.03)
    assert len(trimmed) / rate == pytest.approx(0.2 + 0.06, abs=0.005)
    quiet = silence(0.3, rate)
    assert len(trim_silence(quiet, rate)) == len(quiet)
