"""The wire catalog and codecs: msgpack keeps bytes raw, JSON is proto3 JSON, bad bodies are rejected."""

from __future__ import annotations

import msgpack
import pytest

from core.config import load_settings
from core.context import GlobalContext, ProcessContext, ServiceContext
from core.errors import InvalidArgument, NotFound
from core.wire import from_json, from_msgpack, message_to_dict, operation, operations, to_json, to_message, to_msgpack
from uvpb import stt_pb2


def _req() -> stt_pb2.TranscribeRequest:
    return to_message(
        stt_pb2.TranscribeRequest,
        {"audio": {"data": bytes(range(256)), "encoding": "PCM_S16LE", "sample_rate": 16000}, "language": "pt"},
    )


def test_msgpack_round_trip_keeps_audio_as_raw_bytes() -> None:
    body = to_msgpack(_req())
    decoded = msgpack.unpackb(body, raw=False)
    assert isinstance(decoded["audio"]["data"], bytes)
    assert decoded["audio"]["encoding"] == "PCM_S16LE"
    assert from_msgpack(stt_pb2.TranscribeRequest, body) == _req()


def test_json_round_trip_uses_base64_and_proto_names() -> None:
    body = to_json(_req())
    assert b'"sample_rate": 16000' in body
    assert from_json(stt_pb2.TranscribeRequest, body) == _req()


def test_repeated_messages_become_lists_of_dicts() -> None:
    r = stt_pb2.TranscribeResponse(text="a b", segments=[{"start_s": 0.5, "end_s": 1.0, "text": "a"}])
    assert message_to_dict(r)["segments"] == [{"start_s": 0.5, "end_s": 1.0, "text": "a"}]


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01"])
def test_bad_msgpack_is_invalid_argument(body: bytes) -> None:
    with pytest.raises(InvalidArgument):
        from_msgpack(stt_pb2.TranscribeRequest, body)


def test_unknown_field_and_bad_json_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="its fields are"):
        to_message(stt_pb2.TranscribeRequest, {"audoi": {}})
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        from_json(stt_pb2.TranscribeRequest, b"{not json")


def test_catalog_paths_and_errors() -> None:
    op = operation("stt", "Transcribe")
    assert op.grpc_path == "/ultravox.v1.SpeechToText/Transcribe"
    assert op.http_path == "/rpc/ultravox.v1.SpeechToText/Transcribe"
    assert {"Echo", "Info", "Transcribe"} <= set(operations("stt"))
    with pytest.raises(NotFound, match="available methods"):
        operation("stt", "Speak")
    with pytest.raises(NotFound, match="known roles"):
        operations("vision")


def test_launch_spec_round_trip_carries_config_ports_and_token() -> None:
    g = GlobalContext.create(load_settings(env={}))
    sc = ServiceContext(ProcessContext(g, "stt"), g.settings.services["stt"], 5001, 5002, parent_pid=42)
    back = ServiceContext.from_launch_env(sc.launch_env())
    assert (back.config, back.grpc_port, back.http_port, back.parent_pid) == (sc.config, 5001, 5002, 42)
    assert back.token == g.internal_token and back.paths == g.paths
