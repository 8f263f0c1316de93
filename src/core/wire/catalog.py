"""Every operation a service role serves, named once for gRPC and HTTP alike.

The gRPC path is ``/ultravox.v1.SpeechToText/Transcribe``; the HTTP path mirrors it as
``/rpc/ultravox.v1.SpeechToText/Transcribe``. HTTP bodies are msgpack or proto3 JSON, chosen
by Content-Type. Every role also serves the Control operations (Echo, Info).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.message import Message

from core.errors import NotFound
from uvpb import cluster_pb2, common_pb2, llm_pb2, stt_pb2, tts_pb2


class Kind(enum.Enum):
    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    grpc_service: str
    request: type[Message]
    response: type[Message]
    kind: Kind = Kind.UNARY

    @property
    def grpc_path(self) -> str:
        return f"/{self.grpc_service}/{self.name}"

    @property
    def http_path(self) -> str:
        return f"/rpc/{self.grpc_service}/{self.name}"


_CONTROL = "ultravox.v1.Control"
CONTROL_OPS: dict[str, Operation] = {
    "Echo": Operation("Echo", _CONTROL, common_pb2.EchoRequest, common_pb2.EchoResponse),
    "Info": Operation("Info", _CONTROL, common_pb2.InfoRequest, common_pb2.InfoResponse),
    "EchoRepeat": Operation(
        "EchoRepeat", _CONTROL, common_pb2.EchoRepeatRequest, common_pb2.EchoResponse, Kind.SERVER_STREAM
    ),
    "EchoStream": Operation(
        "EchoStream", _CONTROL, common_pb2.EchoRequest, common_pb2.EchoResponse, Kind.BIDI_STREAM
    ),
}

_STT = "ultravox.v1.SpeechToText"
_TTS = "ultravox.v1.TextToSpeech"
_LLM = "ultravox.v1.LanguageModel"
_CLUSTER = "ultravox.v1.Cluster"
_ROLE_OPS: dict[str, dict[str, Operation]] = {
    "stt": {
        "Transcribe": Operation("Transcribe", _STT, stt_pb2.TranscribeRequest, stt_pb2.TranscribeResponse),
        "StreamingRecognize": Operation(
            "StreamingRecognize", _STT, stt_pb2.StreamingRecognizeRequest, stt_pb2.StreamingRecognizeResponse,
            Kind.BIDI_STREAM,
        ),
        "DetectSpeech": Operation(
            "DetectSpeech", _STT, stt_pb2.DetectSpeechRequest, stt_pb2.DetectSpeechResponse
        ),
    },
    "tts": {
        "Synthesize": Operation("Synthesize", _TTS, tts_pb2.SynthesizeRequest, tts_pb2.SynthesizeResponse),
        "SynthesizeStream": Operation(
            "SynthesizeStream", _TTS, tts_pb2.SynthesizeRequest, tts_pb2.SynthesisChunk, Kind.SERVER_STREAM
        ),
        "ListVoices": Operation("ListVoices", _TTS, tts_pb2.ListVoicesRequest, tts_pb2.ListVoicesResponse),
    },
    "llm": {
        "Generate": Operation(
            "Generate", _LLM, llm_pb2.GenerateRequest, llm_pb2.GenerateChunk, Kind.SERVER_STREAM
        ),
        "ListModels": Operation("ListModels", _LLM, llm_pb2.ListModelsRequest, llm_pb2.ListModelsResponse),
    },
    "cluster": {  # the Ray Serve agent (services/cluster): replicas of the model roles' deployments
        "Status": Operation("Status", _CLUSTER, cluster_pb2.ClusterStatusRequest, cluster_pb2.ClusterStatus),
        "Scale": Operation("Scale", _CLUSTER, cluster_pb2.ScaleRequest, cluster_pb2.ClusterStatus),
    },
}


def operations(role: str) -> dict[str, Operation]:
    """All operations a service of ``role`` serves, Control included."""
    if role not in _ROLE_OPS:
        raise NotFound(f"unknown service role {role!r}; known roles: {', '.join(sorted(_ROLE_OPS))}")
    return {**CONTROL_OPS, **_ROLE_OPS[role]}


def operation(role: str, method: str) -> Operation:
    ops = operations(role)
    if method not in ops:
        raise NotFound(
            f"service role {role!r} has no method {method!r}; available methods: {', '.join(sorted(ops))}"
        )
    return ops[method]
