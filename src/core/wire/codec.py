"""Message <-> bytes for the HTTP transports.

msgpack carries a plain dict with ``bytes`` for bytes fields (no base64) and enum names as
strings. JSON is proto3's canonical JSON mapping (base64 for bytes), the human-readable last
resort. Field names are the proto names (``sample_rate``, not ``sampleRate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

import msgpack
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from core.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """A plain dict of the fields that are set, bytes kept raw, enums by name."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        out[field.name] = _value_to_py(field, value)
    return out


def _value_to_py(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        vfield = field.message_type.fields_by_name["value"]
        return {k: _scalar_to_py(vfield, v) for k, v in value.items()}
    if _is_repeated(field):
        return [_scalar_to_py(field, v) for v in value]
    return _scalar_to_py(field, value)


def _is_repeated(field: FieldDescriptor) -> bool:
    is_rep = getattr(field, "is_repeated", None)
    if is_rep is not None:
        return bool(is_rep)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)  # older protobuf


def _scalar_to_py(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        ev = field.enum_type.values_by_number.get(value)
        return ev.name if ev is not None else value
    return value


def to_message(cls: type[M], payload: M | Mapping[str, Any] | None) -> M:
    """Build ``cls`` from a message of that type or a dict of its fields (unknown keys rejected)."""
    if payload is None:
        return cast(M, cls())
    if isinstance(payload, cls):
        return payload
    if isinstance(payload, Message):
        raise InvalidArgument(
            f"expected a {cls.DESCRIPTOR.full_name} message, got {payload.DESCRIPTOR.full_name}"
        )
    if not isinstance(payload, Mapping):
        raise InvalidArgument(
            f"expected a {cls.DESCRIPTOR.full_name} as a map of fields, got {type(payload).__name__}"
        )
    try:
        return cast(M, cls(**dict(payload)))
    except (ValueError, TypeError, AttributeError) as e:
        fields = ", ".join(f.name for f in cls.DESCRIPTOR.fields)
        raise InvalidArgument(
            f"invalid {cls.DESCRIPTOR.full_name}: {e}; its fields are: {fields}"
        ) from e


def to_msgpack(msg: Message) -> bytes:
    return cast(bytes, msgpack.packb(message_to_dict(msg), use_bin_type=True))


def from_msgpack(cls: type[M], data: bytes) -> M:
    try:
        payload: Any = msgpack.unpackb(data, raw=False) if data else {}
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise InvalidArgument(f"request body is not valid msgpack: {e}") from e
    msg: M = to_message(cls, payload)
    return msg


def to_json(msg: Message) -> bytes:
    return cast(str, json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=None)).encode()


def from_json(cls: type[M], data: bytes) -> M:
    msg: M = cls()
    try:
        json_format.Parse(data or b"{}", msg)
    except json_format.ParseError as e:
        raise InvalidArgument(f"invalid JSON {cls.DESCRIPTOR.full_name}: {e}") from e
    return msg


def from_bytes(cls: type[M], data: bytes) -> M:
    """Parse a serialized protobuf (the gRPC wire format)."""
    try:
        return cast(M, cls.FromString(data))
    except DecodeError as e:
        raise InvalidArgument(f"malformed {cls.DESCRIPTOR.full_name}: {e}") from e
