"""Compressed and other containers (MP3, FLAC, OGG, M4A, WebM...) through PyAV (FFmpeg).

Used only when a request leaves the encoding unspecified and the bytes are not WAV, e.g. an
upload to the OpenAI-compatible route. PyAV comes with faster-whisper, so the STT venv always
has it; it is imported on first use so the WAV/PCM paths work without it.
"""

from __future__ import annotations

import io

import numpy as np

from core.errors import InvalidArgument

HINT = "send WAV, raw PCM16 (encoding PCM_S16LE with its sample_rate), or a common format like MP3 or FLAC"


def decode_container(data: bytes, rate_out: int, max_samples: int) -> tuple[np.ndarray, int, int, str]:
    """(float32 mono samples at ``rate_out``, source rate, source channels, format name).

    Decoding stops soon after ``max_samples``; the caller refuses the clip as too long.
    """
    try:
        import av  # noqa: PLC0415 - optional outside the STT venv
    except ImportError as e:
        raise InvalidArgument(f"audio is not WAV and this service has no PyAV to decode it; {HINT}") from e
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is None:
                raise InvalidArgument(f"the {container.format.name} file has no audio stream; {HINT}")
            rate, channels, fmt = stream.rate or 0, stream.channels or 0, container.format.name
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > max_samples:
                    break
            else:
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as e:
        raise InvalidArgument(f"could not decode the audio ({type(e).__name__}: {e}); {HINT}") from e
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, rate, channels, fmt
