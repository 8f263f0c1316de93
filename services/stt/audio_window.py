"""The recent audio of one stream, addressed by sample index on the stream's clock.

A stream appends every chunk it receives and drops what no utterance can need any more, so
memory stays bounded by the longest utterance plus the pre-roll, however long the stream runs.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class AudioWindow:
    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.first = 0
        """Sample index of the oldest sample kept."""
        self.end = 0
        """Sample index one past the newest sample (samples received so far)."""

    def __len__(self) -> int:
        return self.end - self.first

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self.end += samples.size

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop), clamped to what is kept."""
        start, stop = max(start, self.first), min(stop, self.end)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        parts: list[np.ndarray] = []
        at = self.first
        for chunk in self._chunks:
            lo, hi = at, at + chunk.size
            at = hi
            if hi <= start:
                continue
            if lo >= stop:
                break
            parts.append(chunk[max(start - lo, 0) : min(stop, hi) - lo])
        window: np.ndarray = np.concatenate(parts).astype(np.float32, copy=False)
        return window

    def drop_before(self, sample: int) -> None:
        """Forget whole chunks that end at or before ``sample``."""
        while self._chunks and self.first + self._chunks[0].size <= sample:
            self.first += self._chunks.popleft().size
