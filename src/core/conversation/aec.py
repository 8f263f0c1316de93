"""Echo cancellation in main: take the reply's own voice out of the microphone before the VAD hears it.

A client without echo cancellation (a phone on speaker, a kiosk) sends the reply back inside its
microphone stream, later and quieter; the VAD takes it for the user and the bot interrupts
itself. Main knows exactly what it plays, so it can remove it:

- **the reference**: reply audio handed to the client (:meth:`EchoCanceller.playing`) plays back
  to back from when it arrives (``max(sent at, end of what played before)``), resampled to 16 kHz
  on one timeline; :meth:`EchoCanceller.stop` cuts it where playback stopped (a flush, a pause);
- **the echo path**: every ``ESTIMATE_EVERY_S`` the recent microphone audio is cross-correlated
  (FFT) with the reference over delays 0..``max_delay_s``; a clear peak (normalised correlation
  at least ``MIN_CORRELATION``) gives the delay and, by least squares, the gain. During double
  talk (the user speaks over the reply) the peak is weak and the estimate is kept, not spoiled;
- **removal**: each frame gets ``gain x`` the reference at that delay subtracted; what is left is
  the user. A frame whose residual is well below the echo it had (``SUPPRESS_RATIO``) is
  silenced outright (no VAD sees anything); a frame where the residual stands out (the user
  talks) passes as the residual.
- **before the first estimate** the path is estimated at every frame, from as little as
  ``FIRST_WINDOW_S`` of microphone audio, so an echo is found within a fraction of a second of the
  reply starting (too short for the VAD to call it speech); until then, and whenever no clear echo
  is found (a client with its own echo cancellation, or the user talking over the reply), frames
  pass untouched: the user's words are never dropped on a guess.

Costs: nothing while nothing plays; a few numpy operations per frame, and one FFT of about 1.4 s
every quarter second while a reply plays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.conversation.audio import STT_RATE, resample_pcm16

ESTIMATE_EVERY_S = 0.25
WINDOW_S = 0.8
"""Microphone audio correlated against the reference for one estimate."""
KEEP_S = 2.0
"""Reference kept behind the microphone's clock (beyond the delay and the estimation window)."""
MIN_CORRELATION = 0.45
"""At 0.7 the delayed reply explains half the microphone's energy. Voiced speech of the same voice
correlates up to about 0.5 at some lag (pitch periods line up), so the user speaking over the reply
in the reply's own voice never passes for its echo."""
AGREE_SAMPLES = 32
"""A delay is adopted once two estimates in a row agree within 2 ms: an echo path is stable."""
MAX_GAIN = 1.5
"""An echo louder than 1.5x what plays is not an echo path (a spurious peak)."""
SUPPRESS_RATIO = 1.0
"""Residual energy below this fraction of the echo estimate's: the frame was echo only."""
RESYNC_S = 0.3
"""The sample count may lag the arrival clock by this much (a stalled loop) before it is reset."""
FIRST_WINDOW_S = 0.1
"""Microphone audio needed for a first estimate (later ones use ``WINDOW_S``)."""
FLOOR = 1e-7
"""Energies (float samples, mean square) below this are silence (about -70 dBFS)."""


@dataclass(slots=True)
class EchoStats:
    frames: int = 0
    """Microphone frames processed while a reply played."""
    frames_cleaned: int = 0
    """...passed on with the echo estimate removed (the user spoke, or the echo was faint)."""
    frames_suppressed: int = 0
    """...silenced: echo only."""
    estimates: int = 0
    delay_ms: float | None = None
    gain_db: float | None = None
    last_peak: float = 0.0
    """The normalised correlation of the last estimate's best lag."""


class EchoCanceller:
    def __init__(self, *, mic_rate: int = STT_RATE, max_delay_s: float = 0.6) -> None:
        if mic_rate != STT_RATE:
            raise ValueError(f"the microphone stream is {STT_RATE} Hz PCM16; got mic_rate={mic_rate}")
        self.max_delay = int(max_delay_s * STT_RATE)
        self.stats = EchoStats()
        self._origin: float | None = None
        """Monotonic time of sample 0 of the shared clock."""
        self._ref = np.zeros(0, dtype=np.float32)
        self._ref_start = 0
        """Clock sample of ``_ref[0]``."""
        self._play_end = 0
        """Clock sample where what was handed over so far stops playing."""
        self._mic = np.zeros(0, dtype=np.float32)
        self._mic_end = 0
        self._next_estimate = 0
        self._delay: int | None = None
        self._candidate: int | None = None
        self._gain = 0.0

    # ---- the reference ------------------------------------------------------------------------

    def _clock(self, at: float) -> int:
        if self._origin is None:
            self._origin = at
        return round((at - self._origin) * STT_RATE)

    def playing(self, pcm: bytes, rate: int, at: float) -> None:
        """Reply audio (PCM16 mono at ``rate``) handed to the client at ``at``; it plays after what came before."""
        if not pcm or not 8000 <= rate <= 48000:
            return
        samples = np.frombuffer(resample_pcm16(pcm, rate), dtype="<i2").astype(np.float32) / 32768.0
        start = max(self._clock(at), self._play_end)
        self._write(start, samples)
        self._play_end = start + samples.size

    def stop(self, at: float) -> None:
        """Playback stopped at ``at``: nothing handed over after that point plays."""
        cut = self._clock(at)
        if cut < self._play_end:
            keep = max(0, cut - self._ref_start)
            self._ref = self._ref[:keep]
            self._play_end = max(cut, self._ref_start)

    def _write(self, start: int, samples: np.ndarray) -> None:
        end = start + samples.size
        if self._ref.size == 0:
            self._ref_start = start
        need = end - self._ref_start
        if need > self._ref.size:
            self._ref = np.concatenate([self._ref, np.zeros(need - self._ref.size, dtype=np.float32)])
        self._ref[start - self._ref_start : end - self._ref_start] = samples

    def _forget(self) -> None:
        """Drop reference audio that played too long ago to echo now (replies are sent far ahead of
        playback, so only the microphone's clock says what is old)."""
        drop = self._mic_end - int(KEEP_S * STT_RATE) - self.max_delay - self._ref_start
        if drop > 0:
            self._ref = self._ref[drop:]
            self._ref_start += drop

    def _reference(self, start: int, end: int) -> np.ndarray:
        """The reference over clock samples [start, end), zeros where nothing played."""
        out = np.zeros(max(0, end - start), dtype=np.float32)
        a, b = max(start, self._ref_start), min(end, self._ref_start + self._ref.size, self._play_end)
        if b > a:
            out[a - start : b - start] = self._ref[a - self._ref_start : b - self._ref_start]
        return out

    @property
    def active(self) -> bool:
        """Reply audio played recently enough that its echo may still be arriving."""
        if self._origin is None or self._ref.size == 0:
            return False
        return self._mic_end < self._play_end + self.max_delay + STT_RATE // 10

    # ---- the microphone -----------------------------------------------------------------------

    def process(self, pcm: bytes, at: float) -> bytes:
        """One microphone frame (PCM16 mono 16 kHz) that arrived at ``at``, with the reply's echo taken out.

        An odd trailing byte is dropped; a frame while nothing plays comes back unchanged.
        """
        pcm = pcm[: len(pcm) // 2 * 2]
        if not pcm or self._origin is None:
            return pcm
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        # The microphone's clock counts samples: frames come at real time, and when this event loop is
        # busy they are *seen* late and in bursts; arrival times would shift the echo by tens of ms.
        # Only a real gap (the client stopped sending) resets the count to the arrival clock.
        end = self._mic_end + x.size
        if end < self._clock(at) - RESYNC_S * STT_RATE:
            end = self._clock(at)
        start = end - x.size
        self._remember(x, end)
        self._forget()
        reference_near = self._reference(start - self.max_delay, end)
        if float(np.max(np.abs(reference_near), initial=0.0)) == 0.0:
            return pcm
        self.stats.frames += 1
        if end >= self._next_estimate or self._delay is None:
            self._estimate(end)
            self._next_estimate = end + int(ESTIMATE_EVERY_S * STT_RATE)
        if self._delay is None:
            return pcm  # no echo found (yet): nothing is taken out on a guess
        echo = self._gain * self._reference(start - self._delay, end - self._delay)
        residual = x - echo
        energy_r, energy_e = float(np.mean(residual * residual)), float(np.mean(echo * echo))
        if energy_r < SUPPRESS_RATIO * energy_e or energy_r < FLOOR:
            return self._suppressed(x)
        self.stats.frames_cleaned += 1
        return _pcm16(residual)

    def _suppressed(self, x: np.ndarray) -> bytes:
        self.stats.frames_suppressed += 1
        return bytes(x.size * 2)

    def _remember(self, x: np.ndarray, end: int) -> None:
        keep = int(WINDOW_S * STT_RATE)
        gap = end - x.size - self._mic_end
        parts = [self._mic]
        if 0 < gap < keep:
            parts.append(np.zeros(gap, dtype=np.float32))
        elif gap >= keep:
            parts = []
        parts.append(x)
        self._mic = np.concatenate(parts)[-keep:]
        self._mic_end = end

    def _estimate(self, end: int) -> None:
        """Delay and gain of the echo path from the recent microphone audio, when the correlation is clear."""
        mic = self._mic
        n = mic.size
        if n < FIRST_WINDOW_S * STT_RATE or float(np.mean(mic * mic)) < FLOOR:
            return
        ref = self._reference(end - n - self.max_delay, end)  # ref[k + max_delay - lag] lines up with mic[k]
        if float(np.mean(ref * ref)) < FLOOR:
            return
        size = 1 << int(np.ceil(np.log2(ref.size + n)))
        corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(mic, size)), size)[: self.max_delay + 1]
        # corr[j] = sum_k ref[k + j] * mic[k]; lag = max_delay - j
        squares = np.concatenate([[0.0], np.cumsum(ref.astype(np.float64) ** 2)])
        energy_ref = squares[np.arange(self.max_delay + 1) + n] - squares[np.arange(self.max_delay + 1)]
        energy_mic = float(np.sum(mic.astype(np.float64) ** 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            ncc = np.where(energy_ref > FLOOR * n, corr / np.sqrt(energy_ref * energy_mic), 0.0)
        j = int(np.argmax(ncc))
        self.stats.last_peak = round(float(ncc[j]), 3)
        if ncc[j] < MIN_CORRELATION:
            self._candidate = None
            return  # no clear echo (or the user talks over it): keep what we had
        gain = float(corr[j] / energy_ref[j])
        if not 0 < gain <= MAX_GAIN:
            return
        delay, seen, self._candidate = self.max_delay - j, self._candidate, self.max_delay - j
        if seen is None or abs(delay - seen) > AGREE_SAMPLES:
            return  # wait for the next estimate to agree
        self._delay = delay
        self._gain = gain if self.stats.estimates == 0 else 0.7 * self._gain + 0.3 * gain
        self.stats.estimates += 1
        self.stats.delay_ms = round(self._delay * 1000 / STT_RATE, 1)
        self.stats.gain_db = round(20 * float(np.log10(max(abs(self._gain), 1e-6))), 1)


def _pcm16(x: np.ndarray) -> bytes:
    return bytes(np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes())
