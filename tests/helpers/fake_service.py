"""A fake STT-role service on the real runtime pieces, for fast in-process runtime tests.

``FakeStt.transcribe`` picks its behaviour from the request's ``language`` field: ``bad`` raises
InvalidArgument, ``boom`` raises an unexpected exception, ``wrongtype`` returns the wrong
message type, and anything else echoes the audio size back as text.

``FakeStt.streaming_recognize`` (bidi) answers each audio frame with a PARTIAL event carrying its
size; a config with language ``bad`` is refused before the first event; an audio frame ``reject``
raises InvalidArgument mid-stream and ``crash`` an unexpected exception; ``endless`` starts
yielding events every 5 ms until cancelled. ``produced`` and ``closed`` let a test see how far
the handler got and that it was shut down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute

from core.errors import InvalidArgument
from core.wire import CONTROL_OPS, operation
from services.runtime import CallInfo, Handler, HttpKit, ModelDescription
from services.runtime.dispatch import Dispatcher
from services.runtime.http_app import build_http_app
from services.runtime.limits import BodyLimit
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState

TOKEN = "test-token"
TRANSCRIBE = operation("stt", "Transcribe")
RECOGNIZE = operation("stt", "StreamingRecognize")
DETECT = operation("stt", "DetectSpeech")


class FakeStt:
    role = "stt"

    def __init__(self) -> None:
        self.calls: list[CallInfo] = []
        self.produced = 0
        self.closed: list[str] = []

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "Transcribe": self.transcribe,
            "StreamingRecognize": self.streaming_recognize,
            "DetectSpeech": self.detect_speech,
        }

    async def streaming_recognize(self, requests: AsyncIterator[Any], call: CallInfo) -> AsyncIterator[Any]:
        self.calls.append(call)
        try:
            async for req in requests:
                if req.HasField("config"):
                    if req.config.language == "bad":
                        raise InvalidArgument("language 'bad' is not a language; use an ISO-639-1 code")
                    continue
                if req.audio == b"reject":
                    raise InvalidArgument("audio frame 'reject' refused (test hook)")
                if req.audio == b"crash":
                    raise ZeroDivisionError("kaboom")
                if req.audio == b"endless":
                    while True:
                        self.produced += 1
                        yield RECOGNIZE.response(type="PARTIAL", utterance=self.produced)
                        await asyncio.sleep(0.005)
                self.produced += 1
                yield RECOGNIZE.response(type="PARTIAL", text=f"{len(req.audio)} bytes", utterance=self.produced)
        except BaseException as e:
            self.closed.append(type(e).__name__)
            raise
        self.closed.append("end")

    async def detect_speech(self, req: Any, call: CallInfo) -> Any:
        return DETECT.response(audio_duration_s=len(req.audio.data) / 32000)

    async def transcribe(self, req: Any, call: CallInfo) -> Any:
        self.calls.append(call)
        if req.language == "bad":
            raise InvalidArgument("language 'bad' is not a language; use an ISO-639-1 code such as 'en'")
        if req.language == "boom":
            raise ZeroDivisionError("kaboom")
        if req.language == "wrongtype":
            return CONTROL_OPS["Echo"].response()
        return TRANSCRIBE.response(text=f"{len(req.audio.data)} bytes", language=req.language or "en")

    def load(self) -> None:
        return None

    def describe(self) -> ModelDescription:
        return ModelDescription(engine="fake", model="fake-model", device="cpu", details={"k": "v"})

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return []

    def close(self) -> None:
        return None


@dataclass
class Runtime:
    service: FakeStt
    state: ServiceState
    registry: CollectorRegistry
    dispatcher: Dispatcher
    app: BodyLimit

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"service": "fake", **labels})
        return value or 0.0


def make_runtime(*, ready: bool = True, max_request_bytes: int = 1 << 20) -> Runtime:
    service = FakeStt()
    state = ServiceState("fake")
    if ready:
        state.loaded(0.01)
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        service_name="fake",
        service=service,
        token=TOKEN,
        state=state,
        metrics=RuntimeMetrics(registry, "fake"),
        version="test",
    )
    app = build_http_app(HttpKit(dispatcher), state, registry, max_request_bytes)
    return Runtime(service, state, registry, dispatcher, app)
