"""In-memory fakes for the orchestrator's unit tests: a scripted hub (LLM, TTS, STT), sessions,
admission, recorder and a sink that keeps everything in arrival order.

The fake TTS speaks ``SECONDS_PER_WORD`` of a constant PCM16 value per word at the requested
rate, so tests can tell chunks apart by their audio length; the fake LLM streams scripted
tokens with an optional delay, failure or hang; the fake STT stream yields whatever the test
pushes with :meth:`FakeStt.push` while it records the frames it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from core.config import load_settings
from core.config.models import ConversationConfig
from core.context import GlobalContext, ProcessContext
from core.conversation import Orchestrator
from core.conversation.types import AgentConfig, HistoryItem, Session, TurnRecord
from core.errors import NotFound, Overloaded, ServiceUnavailable, TransportError
from uvpb import llm_pb2, stt_pb2, tts_pb2

SECONDS_PER_WORD = 0.05
SERVICES = {"stt": "stt", "tts": "tts", "llm": "llm"}


@dataclass
class FakeLlm:
    tokens: list[str] = field(default_factory=lambda: ["Paris", " is", " the", " capital", "."])
    delay_s: float = 0.0
    fail_after: int | None = None
    """Raise a TransportError after this many tokens (0: before the first)."""
    hang_after: int | None = None
    requests: list[llm_pb2.GenerateRequest] = field(default_factory=list)
    closed: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, request: llm_pb2.GenerateRequest) -> AsyncGenerator[llm_pb2.GenerateChunk, None]:
        self.requests.append(request)
        self.started.set()
        try:
            for i, token in enumerate(self.tokens):
                if self.fail_after == i:
                    raise TransportError("llm.Generate over grpc broke after some message(s)")
                if self.hang_after == i:
                    await asyncio.Event().wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield llm_pb2.GenerateChunk(delta=token)
            if self.fail_after == len(self.tokens):
                raise TransportError("llm.Generate broke at the end")
            yield llm_pb2.GenerateChunk(finish_reason="stop")
        finally:
            self.closed += 1


@dataclass
class FakeTts:
    delay_s: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)
    """Extra delay for a chunk whose text contains the key."""
    fail_on: str | None = None
    texts: list[str] = field(default_factory=list)
    requests: list[tts_pb2.SynthesizeRequest] = field(default_factory=list)
    closed: int = 0

    @staticmethod
    def audio_for(text: str, rate: int) -> bytes:
        return b"\x01\x00" * round(len(text.split()) * SECONDS_PER_WORD * rate)

    async def synthesize(self, request: tts_pb2.SynthesizeRequest) -> AsyncGenerator[tts_pb2.SynthesisChunk, None]:
        self.requests.append(request)
        try:
            delay = self.delay_s + sum(d for key, d in self.delays.items() if key in request.text)
            if delay:
                await asyncio.sleep(delay)
            if self.fail_on is not None and self.fail_on in request.text:
                raise ServiceUnavailable("tts engine exploded")
            self.texts.append(request.text)
            yield tts_pb2.SynthesisChunk(
                audio=self.audio_for(request.text, request.sample_rate), format="pcm",
                sample_rate=request.sample_rate, text=request.text, final=True,
            )
        finally:
            self.closed += 1


@dataclass
class FakeStt:
    text: str = "what is the capital of france"
    fail: BaseException | None = None
    frames: list[bytes] = field(default_factory=list)
    configs: list[stt_pb2.StreamingConfig] = field(default_factory=list)
    streams: int = 0
    cancels: list[int] = field(default_factory=list)
    """Utterances whose final the conversation cancelled (CancelUtterance)."""
    _events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, kind: str, utterance: int = 0, text: str = "", start_s: float = 0.0, end_s: float = 0.0) -> None:
        self._events.put_nowait(stt_pb2.StreamingRecognizeResponse(
            type=getattr(stt_pb2, kind), utterance=utterance, text=text, start_s=start_s, end_s=end_s,
        ))

    def break_stream(self, err: BaseException) -> None:
        self._events.put_nowait(err)

    def transcribe(self, request: stt_pb2.TranscribeRequest) -> stt_pb2.TranscribeResponse:
        if self.fail is not None:
            raise self.fail
        return stt_pb2.TranscribeResponse(text=self.text)

    async def recognize(self, requests: AsyncIterator[Any]) -> AsyncGenerator[stt_pb2.StreamingRecognizeResponse, None]:
        self.streams += 1
        self.ended.clear()

        async def read() -> None:
            async for req in requests:
                kind = req.WhichOneof("request")
                if kind == "config":
                    self.configs.append(req.config)
                elif kind == "cancel":
                    self.cancels.append(req.cancel.utterance)
                else:
                    self.frames.append(req.audio)
            self._events.put_nowait(None)  # end of input: the fake ends the stream too

        reader = asyncio.create_task(read())
        try:
            while (item := await self._events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.ended.set()


class FakeHub:
    protocols = ("grpc", "msgpack", "json")

    def __init__(self) -> None:
        self.llm, self.tts, self.stt = FakeLlm(), FakeTts(), FakeStt()
        self.calls: list[tuple[str, str]] = []
        self.transcribed: list[Any] = []

    async def call(self, service: str, method: str, payload: Any = None, **_: Any) -> Any:
        self.calls.append((service, method))
        assert method == "Transcribe", method
        self.transcribed.append(payload)
        return self.stt.transcribe(payload)

    async def stream(self, service: str, method: str, payload: Any = None, **_: Any) -> AsyncGenerator[Any, None]:
        self.calls.append((service, method))
        source: AsyncGenerator[Any, None]
        if method == "StreamingRecognize":
            assert _.get("protocol") == "grpc", "a live STT stream must be pinned to gRPC (full duplex)"
        if method == "Generate":
            source = self.llm.generate(payload)
        elif method == "SynthesizeStream":
            source = self.tts.synthesize(payload)
        else:
            assert method == "StreamingRecognize", method
            source = self.stt.recognize(payload)
        async with contextlib.aclosing(source) as messages:
            async for msg in messages:
                yield msg


class FakeSessions:
    def __init__(self, agent: AgentConfig) -> None:
        self.agent_config = agent
        self.sessions: dict[str, Session] = {}
        self.records: list[TurnRecord] = []
        self.fail_record = False

    def create(self, *, agent: str | None = None, session_id: str | None = None, voice: str | None = None,
               language: str | None = None) -> Session:
        s = Session(id=session_id or f"s{len(self.sessions) + 1}", agent=self.agent_config,
                    voice=voice or "", language=language or self.agent_config.language)
        self.sessions[s.id] = s
        return s

    def get(self, session_id: str) -> Session:
        if session_id not in self.sessions:
            raise NotFound(f"unknown session {session_id!r}")
        return self.sessions[session_id]

    async def record_turn(self, session: Session, record: TurnRecord) -> None:
        if self.fail_record:
            raise RuntimeError("disk full")
        session.history += [HistoryItem("user", record.user_text),
                            HistoryItem("assistant", record.assistant_text, record.interrupted)]
        session.turn_count = max(session.turn_count, record.index + 1)
        self.records.append(record)


class FakeAdmission:
    def __init__(self, capacity: int = 4) -> None:
        self.capacity, self.in_flight, self.max_seen = capacity, 0, 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.in_flight >= self.capacity:
            raise Overloaded("busy", retry_after_s=2.0)
        self.in_flight += 1
        self.max_seen = max(self.max_seen, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


class FakeRecorder:
    def __init__(self) -> None:
        self.saved: list[tuple[str, str, int, int, int]] = []

    def save_turn(self, session_id: str, turn_id: str, user_pcm16k: bytes, assistant_pcm: bytes,
                  assistant_rate: int) -> tuple[str, str]:
        self.saved.append((session_id, turn_id, len(user_pcm16k), len(assistant_pcm), assistant_rate))
        return f"/rec/{turn_id}.user.wav", f"/rec/{turn_id}.assistant.wav"


class ListSink:
    """Everything sent, in order: event dicts and ``bytes`` audio."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any] | bytes] = []
        self.changed = asyncio.Event()

    async def send_event(self, event: dict[str, Any]) -> None:
        self.items.append(event)
        self.changed.set()

    async def send_audio(self, pcm: bytes) -> None:
        self.items.append(pcm)
        self.changed.set()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.items if isinstance(i, dict) and (kind is None or i["type"] == kind)]

    def types(self) -> list[str]:
        return ["<audio>" if isinstance(i, bytes) else i["type"] for i in self.items]

    def audio(self) -> bytes:
        return b"".join(i for i in self.items if isinstance(i, bytes))

    def text(self) -> str:
        return "".join(e["delta"] for e in self.events("llm_text"))

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while len(self.events(kind)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.events(kind)[count - 1]


AGENT = AgentConfig(name="test", system_prompt="Be brief.", tts_engine="piper", history_turns=2,
                    fallback_phrase="Sorry, trouble answering.", not_heard_phrase="Sorry, I didn't catch that.")


@dataclass
class Rig:
    hub: FakeHub
    sessions: FakeSessions
    admission: FakeAdmission
    recorder: FakeRecorder
    orch: Orchestrator
    session: Session


def rig(*, recordings: bool = False, capacity: int = 4, **config: Any) -> Rig:
    ctx = ProcessContext(GlobalContext.create(load_settings(env={})), "test")
    hub, sessions, admission, recorder = FakeHub(), FakeSessions(AGENT), FakeAdmission(capacity), FakeRecorder()
    cfg = ConversationConfig(recordings=recordings, **config)
    orch = Orchestrator(ctx, hub, sessions, admission, recorder, cfg, SERVICES)  # type: ignore[arg-type]
    return Rig(hub, sessions, admission, recorder, orch, sessions.create())
