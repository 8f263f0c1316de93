"""HTTP stream frames: how the messages of a streaming operation share one HTTP body.

A streaming reply (and the request body of a bidirectional call) is a sequence of frames, each
``{"data": <message as a dict>}``; a failure ends the sequence with one final
``{"error": {"code": "<gRPC status name>", "message": "..."}}``. A body that simply ends after its
last data frame is a stream that finished cleanly.

* msgpack (``application/msgpack``): the frames are msgpack maps written back to back, with no
  length prefix or separator (msgpack is self-delimiting); bytes fields stay raw bytes.
* JSON (``application/x-ndjson``): one JSON object per line (NDJSON), the message in proto3's
  JSON mapping (bytes as base64, proto field names).

:class:`FrameReader` parses a body incrementally, as its chunks arrive, so a reader never waits
for the whole stream and never holds more than one frame of it beyond what it was fed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import msgpack
from google.protobuf import json_format
from google.protobuf.message import Message

from core.errors import InvalidArgument
from core.wire.codec import message_to_dict, to_message

FrameFormat = Literal["msgpack", "json"]
M = TypeVar("M", bound=Message)

NDJSON_TYPE = "application/x-ndjson"
MSGPACK_TYPE = "application/msgpack"
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed frame: ``data`` (a message as a plain dict) or ``error`` (code, message)."""

    data: Mapping[str, Any] | None = None
    error: tuple[str, str] | None = None


def data_frame(msg: Message, fmt: FrameFormat) -> bytes:
    """The bytes of one ``{"data": ...}`` frame carrying ``msg``."""
    if fmt == "msgpack":
        return cast(bytes, msgpack.packb({"data": message_to_dict(msg)}, use_bin_type=True))
    body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return json.dumps({"data": body}, separators=(",", ":")).encode() + b"\n"


def error_frame(code: str, message: str, fmt: FrameFormat) -> bytes:
    """The bytes of the final ``{"error": {"code", "message"}}`` frame."""
    payload = {"error": {"code": code, "message": message}}
    if fmt == "msgpack":
        return cast(bytes, msgpack.packb(payload, use_bin_type=True))
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def frame_message(cls: type[M], frame: Frame, fmt: FrameFormat) -> M:
    """Build ``cls`` from a data frame; InvalidArgument when the dict does not fit the message."""
    data = frame.data if frame.data is not None else {}
    if fmt == "msgpack":
        return to_message(cls, data)
    msg: M = cls()
    try:
        json_format.ParseDict(dict(data), msg)
    except json_format.ParseError as e:
        raise InvalidArgument(f"invalid JSON {cls.DESCRIPTOR.full_name} in a stream frame: {e}") from e
    return msg


def _frame(obj: Any, index: int) -> Frame:
    if isinstance(obj, Mapping):
        if "data" in obj and isinstance(obj["data"], Mapping):
            return Frame(data=obj["data"])
        err = obj.get("error")
        if isinstance(err, Mapping):
            return Frame(error=(str(err.get("code") or "UNKNOWN"), str(err.get("message") or "")))
    raise InvalidArgument(
        f"stream frame {index} is not a {{'data': {{...}}}} or {{'error': {{...}}}} map "
        f"(got {type(obj).__name__}); each frame must carry one message under 'data'"
    )


class FrameReader:
    """Incremental frame parser: :meth:`feed` chunks as they arrive, :meth:`finish` at the end."""

    def __init__(self, fmt: FrameFormat, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.fmt = fmt
        self.max_frame_bytes = max_frame_bytes
        self.count = 0
        self._fed = 0
        self._parsed = 0
        """Bytes of complete msgpack frames (``Unpacker.tell()`` right after each one)."""
        self._unpacker = (
            msgpack.Unpacker(raw=False, max_buffer_size=max_frame_bytes) if fmt == "msgpack" else None
        )
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        """Parse what ``chunk`` completes; InvalidArgument on a malformed or oversized frame."""
        if not chunk:
            return []
        if self._unpacker is not None:
            return self._feed_msgpack(chunk)
        self._buf += chunk
        out: list[Frame] = []
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl]).strip()
            del self._buf[: nl + 1]
            if line:
                out.append(self._json_line(line))
        if len(self._buf) > self.max_frame_bytes:
            raise InvalidArgument(f"an NDJSON stream frame is over {self.max_frame_bytes} bytes")
        return out

    def finish(self) -> list[Frame]:
        """Frames left at the end of the body (an NDJSON last line without a newline); raises on a cut frame."""
        if self._unpacker is not None:
            if self._parsed < self._fed:
                raise InvalidArgument(
                    f"the msgpack stream ends inside frame {self.count} "
                    f"({self._fed - self._parsed} bytes of an incomplete frame)"
                )
            return []
        line, self._buf = bytes(self._buf).strip(), bytearray()
        return [self._json_line(line)] if line else []

    def _feed_msgpack(self, chunk: bytes) -> list[Frame]:
        assert self._unpacker is not None
        self._fed += len(chunk)
        out = []
        try:
            self._unpacker.feed(chunk)
            for obj in self._unpacker:
                self._parsed = self._unpacker.tell()
                out.append(_frame(obj, self.count))
                self.count += 1
        except msgpack.BufferFull as e:
            raise InvalidArgument(f"a msgpack stream frame is over {self.max_frame_bytes} bytes") from e
        except (ValueError, msgpack.FormatError, msgpack.StackError) as e:
            raise InvalidArgument(f"stream frame {self.count} is not valid msgpack: {e}") from e
        return out

    def _json_line(self, line: bytes) -> Frame:
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise InvalidArgument(f"stream frame {self.count} is not valid JSON: {e}") from e
        frame = _frame(obj, self.count)
        self.count += 1
        return frame
