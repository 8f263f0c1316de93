"""RIFF/WAVE parsing with numpy: PCM 8/16/24/32-bit and 32/64-bit float, any rate and channel count.

The standard-library ``wave`` module (3.11) rejects WAVE_FORMAT_EXTENSIBLE and float files, and
trusts the header's data size; recorders that stream WAV to a pipe write 0 or 0xFFFFFFFF there.
This parser reads the header first (so the caller can refuse an over-long clip before converting
anything), clamps the data chunk to the bytes present, and drops a trailing partial frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidArgument

PCM, FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_PCM_BITS, _FLOAT_BITS = (8, 16, 24, 32), (32, 64)
_HINT = "send a PCM or float WAV, or raw PCM16 with encoding PCM_S16LE and its sample_rate"


def is_wav(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"


@dataclass(frozen=True, slots=True)
class WavLayout:
    """Where the samples are and how they are stored."""

    sample_rate: int
    channels: int
    bits: int
    is_float: bool
    offset: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_layout(data: bytes) -> WavLayout:
    """Parse the header chunks; raises InvalidArgument naming what is wrong with the file."""
    if not is_wav(data):
        raise InvalidArgument(f"audio is not a WAV file (it does not start with a RIFF/WAVE header); {_HINT}")
    fmt: tuple[int, int, int, int] | None = None
    data_at: tuple[int, int] | None = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or data_at is None):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = _parse_fmt(data[body : body + size])
        elif cid == b"data":
            if size == 0 or size > len(data) - body:  # streamed WAV (size 0 or 0xFFFFFFFF), or truncated
                size = len(data) - body
            data_at = (body, size)
        pos = body + size + (size & 1)
    if fmt is None:
        raise InvalidArgument(f"WAV file has no 'fmt ' chunk, so its sample format is unknown; {_HINT}")
    if data_at is None:
        raise InvalidArgument(f"WAV file has no 'data' chunk (no audio samples); {_HINT}")
    tag, channels, rate, bits = fmt
    if tag not in (PCM, FLOAT):
        raise InvalidArgument(f"WAV sample format 0x{tag:04x} is not supported (only PCM and float); {_HINT}")
    if (tag == PCM and bits not in _PCM_BITS) or (tag == FLOAT and bits not in _FLOAT_BITS):
        kind = "PCM" if tag == PCM else "float"
        raise InvalidArgument(f"{bits}-bit {kind} WAV is not supported; {_HINT}")
    if channels < 1:
        raise InvalidArgument(f"WAV header says {channels} channels; the file is damaged; {_HINT}")
    offset, size = data_at
    frame_bytes = channels * bits // 8
    return WavLayout(rate, channels, bits, tag == FLOAT, offset, size // frame_bytes)


def _parse_fmt(chunk: bytes) -> tuple[int, int, int, int]:
    if len(chunk) < 16:
        raise InvalidArgument(f"WAV 'fmt ' chunk is {len(chunk)} bytes, shorter than 16; the file is damaged")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == EXTENSIBLE:
        if len(chunk) < 26:
            raise InvalidArgument("WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is truncated; the file is damaged")
        tag = struct.unpack_from("<H", chunk, 24)[0]  # first two bytes of the sub-format GUID
    return tag, channels, rate, bits


def read_samples(data: bytes, layout: WavLayout) -> np.ndarray:
    """Samples as float32 in [-1, 1], shaped (frames, channels)."""
    width = layout.bits // 8
    raw = memoryview(data)[layout.offset : layout.offset + layout.frames * layout.channels * width]
    if layout.is_float:
        out = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
        out = np.nan_to_num(np.clip(out, -1.0, 1.0), nan=0.0)
    elif width == 1:
        out = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        out = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        out = ints.astype(np.float32) / 8388608.0
    else:
        out = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    return out.reshape(-1, layout.channels)
