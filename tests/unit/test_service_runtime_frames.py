"""Stream frames (core.wire.frames): encoding, incremental decoding at any split, and bad input."""

from __future__ import annotations

import json

import msgpack
import pytest

from core.errors import InvalidArgument
from core.wire import operation
from core.wire.frames import FrameFormat, FrameReader, data_frame, error_frame, frame_message

RECOGNIZE = operation("stt", "StreamingRecognize")
CHUNK = operation("tts", "SynthesizeStream").response


def _messages() -> list[object]:
    return [
        RECOGNIZE.response(type="FINAL", utterance=2, text="olá, mundo", start_s=0.5, end_s=1.25,
                           segments=[{"start_s": 0.5, "end_s": 1.25, "text": "olá"}]),
        RECOGNIZE.response(type="SPEECH_STARTED"),
        RECOGNIZE.response(),
    ]


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_frames_round_trip_when_split_at_every_byte(fmt: FrameFormat) -> None:
    msgs = _messages()
    body = b"".join(data_frame(m, fmt) for m in msgs) + error_frame("INTERNAL", "boom", fmt)  # type: ignore[arg-type]
    for split in range(len(body) + 1):
        reader = FrameReader(fmt)
        frames = reader.feed(body[:split]) + reader.feed(body[split:]) + reader.finish()
        assert [frame_message(RECOGNIZE.response, f, fmt) for f in frames[:-1]] == msgs
        assert frames[-1].error == ("INTERNAL", "boom")


def test_msgpack_frames_keep_bytes_raw_and_json_frames_use_base64() -> None:
    msg = CHUNK(audio=b"\x00\xff" * 3, sample_rate=24000)
    assert msgpack.unpackb(data_frame(msg, "msgpack")) == {"data": {"audio": b"\x00\xff" * 3, "sample_rate": 24000}}
    line = data_frame(msg, "json")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"data": {"audio": "AP8A/wD/", "sample_rate": 24000}}


def test_ndjson_tolerates_blank_lines_and_a_missing_last_newline() -> None:
    reader = FrameReader("json")
    frames = reader.feed(b'\n{"data": {}}\n\n  \n{"data": {"text": "a"}}')
    frames += reader.finish()
    assert [f.data for f in frames] == [{}, {"text": "a"}]


@pytest.mark.parametrize(
    ("fmt", "body", "fragment"),
    [
        ("json", b"{not json}\n", "is not valid JSON"),
        ("json", b'[1, 2]\n', "is not a {'data'"),
        ("json", b'{"data": 5}\n', "is not a {'data'"),
        ("msgpack", b"\xc1", "not valid msgpack"),
        ("msgpack", msgpack.packb("text"), "is not a {'data'"),
    ],
)
def test_malformed_frames_are_invalid_argument(fmt: FrameFormat, body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment.replace("{", r"\{").replace("[", r"\[")):
        reader = FrameReader(fmt)
        reader.feed(body)
        reader.finish()


def test_a_cut_msgpack_stream_is_reported_at_the_end() -> None:
    whole = data_frame(RECOGNIZE.response(text="x"), "msgpack")
    reader = FrameReader("msgpack")
    assert len(reader.feed(whole + whole[:-2])) == 1
    with pytest.raises(InvalidArgument, match=r"ends inside frame 1 \(\d+ bytes"):
        reader.finish()


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_oversized_frames_are_refused(fmt: FrameFormat) -> None:
    reader = FrameReader(fmt, max_frame_bytes=64)
    with pytest.raises(InvalidArgument, match="over 64 bytes"):
        reader.feed(data_frame(CHUNK(audio=b"x" * 200), fmt)[:-1])


def test_a_frame_that_does_not_fit_the_message_is_invalid_argument() -> None:
    frame = FrameReader("json").feed(b'{"data": {"nope": 1}}\n')[0]
    with pytest.raises(InvalidArgument, match="StreamingRecognizeResponse"):
        frame_message(RECOGNIZE.response, frame, "json")
    frame = FrameReader("msgpack").feed(msgpack.packb({"data": {"nope": 1}}))[0]
    with pytest.raises(InvalidArgument, match="StreamingRecognizeResponse"):
        frame_message(RECOGNIZE.response, frame, "msgpack")
