"""A fake STT-role service on the real runtime pieces, for fast in-process runtime tests.

``FakeStt.transcribe`` picks its behaviour from the request's ``language`` field: ``bad`` raises
InvalidArgument, ``boom`` raises an unexpected exception, ``wrongtype`` returns the wrong
message type, and anything else echoes the audio size back as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class FakeStt:
    role = "stt"

    def __init__(self) -> None:
        self.calls: list[CallInfo] = []

    def handlers(self) -> Mapping[str, Handler]:
        return {"Transcribe": self.transcribe}

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
