"""One StreamingRecognize stream: PCM16 frames in; VAD events, partials and finals out.

Three parts run side by side, so that audio keeps flowing while Whisper works:

- the *reader* task takes audio messages, scores them with the VAD, turns boundaries into
  SPEECH_STARTED / SPEECH_ENDED events at once, and queues a *final job* per utterance (its
  audio from ``pre_roll`` before the start, never overlapping the previous utterance) and, while
  speech goes on, a *partial job* every ``partial_interval`` when the engine is free (a busy
  engine skips the partial; partials never queue up; none starts in a pause, where it would
  only hold up the final);
- the *transcriber* task runs the jobs one at a time on the shared worker pool;
- the generator (:meth:`StreamSession.events`) yields what both put on the output queue.

At the end of input an utterance in progress ends; the stream closes after its last FINAL.
A bad message (an odd byte count, an oversized frame, a file header such as RIFF in the first
frame, a second config) ends the stream with INVALID_ARGUMENT after the events before it; any
other bytes are just audio, and noise is noise to the VAD. On cancel the
tasks are cancelled; a Whisper decode already running (at most one, up to ``max_utterance_s``
of audio) finishes in its thread and is dropped.

End of turn (``turn_config``): at a short pause the reader reports SPEECH_PAUSED and queues a
*speculative* final job for the utterance so far; in ``semantic`` mode it then asks the turn
model (in the VAD pool) whether the turn is complete, and a "complete" ends the utterance at the
pause. When the utterance ends with no speech since the pause, the speculative decode becomes its
FINAL (a *hit*: the decode started up to ``max_wait_ms`` or ``end_silence_ms`` earlier); when
speech resumes (SPEECH_RESUMED), it is thrown away (a *miss*: skipped if not started, its CPU
time counted if it ran). A ``cancel`` message drops an utterance's final: a caller that refused
the turn (admission control) frees the engine for the others.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidArgument
from services.stt.audio_window import AudioWindow
from services.stt.engine import SttEngine, Transcript
from services.stt.metrics import SttMetrics
from services.stt.segmenter import Boundary, Phase, Segmenter
from services.stt.stream_config import StreamSettings
from services.stt.vad import FRAME, FrameScorer
from services.stt.vad_config import SAMPLE_RATE
from services.stt.workers import WorkerPool

if TYPE_CHECKING:
    from services.stt.smart_turn import TurnModel

MAX_FRAME_BYTES = 1 << 20
"""Largest audio message: 1 MiB, about 33 s of PCM16 at 16 kHz."""
INLINE_VAD_SAMPLES = 16 * FRAME
"""Bigger chunks are scored in a worker thread, so the event loop never stalls on a long chunk."""
MAX_PENDING_FINALS = 4
"""Finals waiting for the engine; past this the reader waits, which slows a sender that outruns it."""
CONTAINERS = {b"RIFF": "a WAV (RIFF) file", b"OggS": "an Ogg file", b"fLaC": "a FLAC file", b"ID3": "an MP3 file",
              b"\x1aE\xdf\xa3": "a WebM/Matroska file"}
"""File headers a first audio frame must not start with: a common mistake, refused with a clear reason."""


@dataclass(frozen=True, slots=True)
class Job:
    utterance: int
    audio: np.ndarray
    offset_s: float
    """Where ``audio`` starts on the stream clock."""
    start_s: float
    end_s: float
    final: bool
    ended_at: float = 0.0
    """``perf_counter`` when SPEECH_ENDED went out (finals)."""
    speculation: Speculation | None = None
    """Set on the speculative decode started at a pause."""


@dataclass(slots=True, eq=False)
class Speculation:
    """The final decode started at a pause, and what became of it."""

    job: Job | None = None
    valid: bool = True
    """No speech since the pause (and not cancelled): its transcript is the utterance's."""
    result: tuple[Transcript, float] | None = None
    commit: Job | None = None
    """The utterance's final (its real end) once the turn ended: the result is sent as that FINAL."""


def seconds(sample: int) -> float:
    return sample / SAMPLE_RATE


class StreamSession:
    def __init__(
        self,
        settings: StreamSettings,
        scorer: FrameScorer,
        engine: SttEngine,
        whisper: WorkerPool,
        vad_pool: WorkerPool,
        metrics: SttMetrics,
        response: Callable[..., Any],
        turn_model: TurnModel | None = None,
        key: str = "",
    ) -> None:
        """``key`` names the stream in the worker pool's line (its finals take turns with other streams')."""
        self.s, self.scorer, self.engine = settings, scorer, engine
        self.whisper, self.vad_pool, self.metrics, self.response = whisper, vad_pool, metrics, response
        self.turn_model = turn_model if settings.turn.detection == "semantic" else None
        self.key = key or f"stream-{id(self)}"
        max_samples = int(settings.max_utterance_s * SAMPLE_RATE)
        turn = settings.turn
        vad = settings.vad
        if self.turn_model is not None:  # the wait after a pause is capped by max_wait_ms, not end_silence
            vad = replace(vad, end_silence_ms=turn.max_wait_ms)
        pause: int | None = turn.pause_samples
        if self.turn_model is None and (not turn.speculation or turn.pause_ms >= vad.end_silence_ms):
            pause = None  # VAD only, no speculation: nothing happens at a pause
        self.segmenter = Segmenter(vad, max_samples, pause_samples=pause)
        self.spec: Speculation | None = None
        self.turn_probability = -1.0
        self.ending: str | None = None
        """Why the utterance is ending, when the reader decided it (semantic, end_of_input)."""
        self.cancelled: set[int] = set()
        self.window = AudioWindow()
        self.pre_roll = settings.vad.samples(settings.vad.pre_roll_ms)
        self.utterance = 0
        self.start_s = 0.0
        self.audio_from = 0
        """Where the current utterance's audio starts (pre-roll included)."""
        self.prev_end = 0
        self.last_partial = 0
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.jobs: asyncio.Queue[Job | None] = asyncio.Queue(MAX_PENDING_FINALS)
        self.busy = False

    async def events(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Run the stream; yields responses, raises the error that ended it."""
        reader = asyncio.create_task(self._guard(self._read(requests)), name="stt-stream-reader")
        transcriber = asyncio.create_task(self._guard(self._transcribe()), name="stt-stream-transcriber")
        try:
            while True:
                item = await self.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in (reader, transcriber):
                task.cancel()
            await asyncio.wait([reader, transcriber])

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except Exception as e:  # handed to the generator, which raises it to the runtime
            self.out.put_nowait(e)

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        async for req in requests:
            kind = req.WhichOneof("request")
            if kind == "config":
                raise InvalidArgument(
                    "StreamingConfig may only be the first message of a stream; send audio frames after it"
                )
            if kind == "cancel":
                self._cancel(req.cancel.utterance)
                continue
            if kind != "audio":
                raise InvalidArgument(
                    "every message after the first must carry 'audio' (PCM16 frames) or 'cancel'"
                )
            await self._audio(req.audio)
            await asyncio.sleep(0)  # let the transcriber and the output run between messages
        self.ending = "end_of_input"
        for b in self.segmenter.finish(self.window.end):
            await self._boundary(b)
        await self.jobs.put(None)

    def _cancel(self, utterance: int) -> None:
        if not 0 <= utterance <= self.utterance:
            raise InvalidArgument(
                f"cancel.utterance {utterance} is not an utterance of this stream (0..{self.utterance}); "
                "cancel only an utterance whose SPEECH_STARTED you saw"
            )
        if utterance in self.cancelled:
            return
        self.cancelled.add(utterance)
        self.metrics.cancelled()
        if self.spec is not None and self.spec.job is not None and self.spec.job.utterance == utterance:
            self.spec.valid = False

    async def _audio(self, data: bytes) -> None:
        if len(data) > MAX_FRAME_BYTES:
            raise InvalidArgument(
                f"audio message of {len(data)} bytes is over the {MAX_FRAME_BYTES}-byte limit; send the "
                "audio as a stream of small frames (20 to 100 ms each is typical)"
            )
        if len(data) % 2:
            raise InvalidArgument(
                f"audio message has {len(data)} bytes, an odd number: PCM16 needs an even number of bytes "
                "(2 per sample); send whole little-endian 16-bit mono samples at 16 kHz"
            )
        if self.window.end == 0:
            self._refuse_container(data)
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        self.window.append(samples)
        if samples.size > INLINE_VAD_SAMPLES:
            probs = await self.vad_pool.run(lambda: self.scorer.push(samples), admit=False)
        else:
            probs = self.scorer.push(samples)
        self.metrics.frames(probs.size)
        for i in range(probs.size):  # frame by frame: a decision at a pause (end_now) applies to what follows
            for b in self.segmenter.feed(probs[i : i + 1]):
                await self._boundary(b)
        phase = self.segmenter.phase
        if phase is Phase.SPEECH:
            self._maybe_partial()
        else:  # keep only what a coming utterance's pre-roll may need
            since = self.segmenter.start if phase is Phase.CANDIDATE else self.segmenter.position
            self.window.drop_before(since - self.pre_roll)

    @staticmethod
    def _refuse_container(data: bytes) -> None:
        for magic, what in CONTAINERS.items():
            if data.startswith(magic):
                raise InvalidArgument(
                    f"the first audio frame starts like {what}: stream audio is raw PCM16 little-endian mono at "
                    "16 kHz, with no header; decode the file and send its samples, or send the whole file to "
                    "Transcribe / DetectSpeech"
                )

    async def _boundary(self, b: Boundary) -> None:
        n = self.utterance
        if b.kind == "start":
            self.audio_from = max(b.sample - self.pre_roll, self.prev_end, self.window.first)
            self.last_partial = b.decided_at
            self.start_s = seconds(b.sample)
            self.spec, self.turn_probability = None, -1.0
            self.out.put_nowait(self.response(type="SPEECH_STARTED", utterance=n, start_s=self.start_s))
        elif b.kind == "pause":
            await self._paused(b)
        elif b.kind == "resume":
            self._resumed()
            self.out.put_nowait(self.response(type="SPEECH_RESUMED", utterance=n, start_s=self.start_s))
        else:
            await self._ended(b)

    async def _paused(self, b: Boundary) -> None:
        n = self.utterance
        self.out.put_nowait(self.response(
            type="SPEECH_PAUSED", utterance=n, start_s=self.start_s, end_s=seconds(b.sample),
            turn_probability=self.turn_probability,
        ))
        audio = self.window.slice(self.audio_from, b.decided_at)
        if self.s.turn.speculation and n not in self.cancelled:
            self.spec = Speculation()
            self.spec.job = Job(
                n, audio, seconds(self.audio_from), self.start_s, seconds(b.sample), True, speculation=self.spec
            )
            await self.jobs.put(self.spec.job)
        model = self.turn_model
        if model is None:
            return
        started = time.perf_counter()
        self.turn_probability = p = await self.vad_pool.run(lambda: model.probability(audio), admit=False)
        complete = p >= self.s.turn.threshold
        self.metrics.turn_decision(time.perf_counter() - started, complete)
        if complete and (end := self.segmenter.end_now()) is not None:
            self.ending = "semantic"
            await self._ended(end)

    def _resumed(self) -> None:
        spec, self.spec = self.spec, None
        if spec is None:
            return
        spec.valid = False
        self.metrics.speculation("miss", spec.result[1] if spec.result is not None else 0.0)

    async def _ended(self, b: Boundary) -> None:
        n = self.utterance
        reason = self.ending or (
            "max_length" if b.forced else "max_wait" if self.turn_model is not None else "silence"
        )
        self.ending = None
        self.metrics.ended(reason)
        end_s = seconds(b.sample)
        self.out.put_nowait(self.response(
            type="SPEECH_ENDED", utterance=n, start_s=self.start_s, end_s=end_s, end_reason=reason,
            turn_probability=self.turn_probability,
            turn_detection="semantic" if self.turn_model is not None else "vad",
        ))
        job = Job(n, self.window.slice(self.audio_from, b.decided_at), seconds(self.audio_from), self.start_s,
                  end_s, True, time.perf_counter())
        self.prev_end = b.decided_at
        self.utterance += 1
        spec, self.spec = self.spec, None
        if spec is not None and spec.valid:
            self.metrics.speculation("hit", 0.0)
            spec.commit = job
            if spec.result is not None:  # the decode finished during the pause
                self._final(job, *spec.result, speculative=True)
            return
        if n in self.cancelled:
            return
        await self.jobs.put(job)  # waits when MAX_PENDING_FINALS are queued

    def _maybe_partial(self) -> None:
        if not self.s.partials or seconds(self.window.end - self.last_partial) < self.s.partial_interval_s:
            return
        if self.segmenter.silence_from is not None:
            return  # a pause: nothing new to show, and the final may be due soon; keep the engine free
        self.last_partial = self.window.end
        if self.busy or not self.jobs.empty() or self.whisper.saturated:
            self.metrics.partial("skipped")
            return
        audio = self.window.slice(self.audio_from, self.window.end)
        end_s = seconds(self.window.end)
        self.jobs.put_nowait(Job(self.utterance, audio, seconds(self.audio_from), self.start_s, end_s, False))

    async def _transcribe(self) -> None:
        while (job := await self.jobs.get()) is not None:
            spec = job.speculation
            if (spec is not None and not spec.valid) or (job.final and job.utterance in self.cancelled):
                continue  # speech resumed, or the caller dropped the utterance, before the decode began
            self.busy = True
            try:
                started = time.perf_counter()
                decode = functools.partial(self.engine.transcribe, job.audio, self.s.decode)
                transcript = await self.whisper.run(decode, admit=False, key=self.key, low=not job.final)
                took = time.perf_counter() - started
            finally:
                self.busy = False
            self.metrics.transcribed(job.audio.size / SAMPLE_RATE, took)
            if spec is not None:
                spec.result = (transcript, took)
                if not spec.valid:  # speech resumed while it ran: the miss cost this much CPU
                    self.metrics.speculation_wasted_s(took)
                elif spec.commit is not None:
                    self._final(spec.commit, transcript, took, speculative=True)
            elif job.final:
                self._final(job, transcript, took)
            else:
                self.out.put_nowait(self._result(job, transcript, took))
                self.metrics.partial("sent")
        self.out.put_nowait(None)

    def _final(self, job: Job, transcript: Transcript, took: float, *, speculative: bool = False) -> None:
        if job.utterance in self.cancelled:
            return
        resp = self._result(job, transcript, took)
        resp.speculative = speculative
        self.out.put_nowait(resp)
        self.metrics.final(time.perf_counter() - job.ended_at)

    def _result(self, job: Job, t: Transcript, took: float) -> Any:
        resp = self.response(
            type="FINAL" if job.final else "PARTIAL", utterance=job.utterance, text=t.text,
            start_s=job.start_s, end_s=job.end_s, processing_time_s=took, language=t.language,
        )
        for seg in t.segments:
            resp.segments.add(
                start_s=job.offset_s + seg.start_s, end_s=job.offset_s + seg.end_s, text=seg.text,
                avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
            )
        return resp
