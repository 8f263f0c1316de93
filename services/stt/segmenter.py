"""Turns per-frame speech probabilities into utterances: where speech starts and where it ends.

Pure logic on the stream's sample clock, shared by StreamingRecognize and DetectSpeech::

    IDLE --p >= threshold--> CANDIDATE --lasted min_speech--> SPEECH --end_silence of silence--> IDLE
                             CANDIDATE --p < neg_threshold--> IDLE   (a cough, a click)

In SPEECH a frame below ``neg_threshold`` (threshold - 0.15) opens a silence run and only a frame
at or above ``threshold`` closes it again (hysteresis, as Silero's own segmenter). The utterance
ends at the start of a silence run that lasted ``end_silence_ms``. With ``pause_samples`` set, a
silence run that lasted that long is first reported as a ``pause`` (once per run), and speech
after it as a ``resume``; :meth:`Segmenter.end_now` ends the utterance at the pause (a turn model
decided it is complete). An utterance that reaches
``max_samples`` is cut there and a new one may start at once. Each event says where the speech
boundary is (``sample``) and at which point of the stream it was decided (``decided_at``): the
stream may already hold audio past the boundary by then.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.stt.vad import FRAME
from services.stt.vad_config import VadSettings


class Phase(enum.Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    SPEECH = "speech"


@dataclass(frozen=True, slots=True)
class Boundary:
    kind: Literal["start", "end", "pause", "resume"]
    sample: int
    """Speech starts at / ends before this sample of the stream."""
    decided_at: int
    """The end of the frame that decided it."""
    forced: bool = False
    """An end cut at ``max_samples``, not found in silence."""


class Segmenter:
    """Feed probabilities in order with :meth:`feed`; call :meth:`finish` at the end of input."""

    def __init__(
        self, settings: VadSettings, max_samples: int | None = None, frame: int = FRAME,
        pause_samples: int | None = None,
    ) -> None:
        self.settings, self.frame, self.max_samples = settings, frame, max_samples
        self.pause_samples = pause_samples
        self.paused = False
        """A ``pause`` was reported for the current silence run."""
        self.threshold, self.neg_threshold = settings.threshold, settings.neg_threshold
        self.min_speech = settings.samples(settings.min_speech_ms)
        self.end_silence = settings.samples(settings.end_silence_ms)
        self.phase = Phase.IDLE
        self.start = 0
        """Start of the current candidate or utterance."""
        self.silence_from: int | None = None
        self.position = 0
        """Samples scored so far (a multiple of ``frame``)."""

    def feed(self, probs: np.ndarray) -> list[Boundary]:
        out: list[Boundary] = []
        for p in probs.tolist():
            begin = self.position
            self.position += self.frame
            self._step(float(p), begin, self.position, out)
        return out

    def finish(self, total: int) -> list[Boundary]:
        """End of input at sample ``total``: an utterance in progress ends; a candidate is dropped."""
        out: list[Boundary] = []
        if self.phase is Phase.SPEECH:
            end = self.silence_from if self.silence_from is not None else total
            out.append(Boundary("end", end, total))
        self.phase, self.silence_from, self.paused = Phase.IDLE, None, False
        return out

    def end_now(self) -> Boundary | None:
        """End the utterance at the silence it is paused in (the turn is complete); None if not in one."""
        if self.phase is not Phase.SPEECH or self.silence_from is None:
            return None
        boundary = Boundary("end", self.silence_from, self.position)
        self.phase, self.silence_from, self.paused = Phase.IDLE, None, False
        return boundary

    def _step(self, p: float, begin: int, end: int, out: list[Boundary]) -> None:
        if self.phase is Phase.IDLE:
            if p < self.threshold:
                return
            self.phase, self.start = Phase.CANDIDATE, begin
        if self.phase is Phase.CANDIDATE:
            if p < self.neg_threshold:
                self.phase = Phase.IDLE
            elif end - self.start >= self.min_speech:
                self.phase, self.silence_from = Phase.SPEECH, None
                out.append(Boundary("start", self.start, end))
            return
        if p >= self.threshold:
            if self.paused:
                out.append(Boundary("resume", begin, end))
            self.silence_from, self.paused = None, False
        elif p < self.neg_threshold and self.silence_from is None:
            self.silence_from = begin
        if self.silence_from is not None and end - self.silence_from >= self.end_silence:
            out.append(Boundary("end", self.silence_from, end))
            self.phase, self.silence_from, self.paused = Phase.IDLE, None, False
        elif self.max_samples is not None and end - self.start >= self.max_samples:
            out.append(Boundary("end", end, end, forced=True))
            self.phase, self.silence_from, self.start, self.paused = Phase.CANDIDATE, None, end, False
        elif (
            self.pause_samples is not None and self.silence_from is not None and not self.paused
            and end - self.silence_from >= self.pause_samples
        ):
            self.paused = True
            out.append(Boundary("pause", self.silence_from, end))


def segments(probs: np.ndarray, settings: VadSettings, total: int) -> list[tuple[int, int]]:
    """(start, end) sample pairs of the speech in a whole clip of ``total`` samples."""
    seg = Segmenter(settings)
    bounds = seg.feed(probs) + seg.finish(total)
    pairs: list[tuple[int, int]] = []
    for b in bounds:
        if b.kind == "start":
            pairs.append((b.sample, total))
        else:
            pairs[-1] = (pairs[-1][0], min(b.sample, total))
    return pairs
