"""Hypothesis strategies for malformed service requests, made from an operation's message type.

Every strategy draws plain ``bytes`` (one body, or the messages of a stream), so a test sends
exactly what was drawn. The shapes: random bytes; truncated or trailing-garbage msgpack; valid
msgpack or JSON of the wrong shape (not a map, unknown keys, the message's own fields with values
of the wrong type, deep nesting, huge strings); JSON that does not parse or is not UTF-8; and for
gRPC, other message types serialized, truncated protobufs and strings that are not UTF-8.
Whether a drawn body could be a valid request at all is decided by the test's oracle (it decodes
the body the way the service does), not here.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from uvpb import common_pb2, llm_pb2, stt_pb2, tts_pb2

F = FieldDescriptor
INT_TYPES = {F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_SINT32, F.TYPE_SINT64,
             F.TYPE_FIXED32, F.TYPE_FIXED64, F.TYPE_SFIXED32, F.TYPE_SFIXED64}
FLOAT_TYPES = {F.TYPE_FLOAT, F.TYPE_DOUBLE}
INT32_TYPES = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
HUGE_CHARS = (50_000, 2_000_000)
"""A huge string in a body: big enough to stress the decoders, well inside the services' body cap."""

WRONG_MEDIA = ("text/plain", "application/xml", "application/octet-stream", "multipart/form-data",
               "application/x-www-form-urlencoded", "application/grpc", "application/jsonx", "msgpack",
               "application/protobuf", "")


def all_messages() -> list[type[Message]]:
    """Every message class of the service protos (the wrong messages a fuzz may send)."""
    out: list[type[Message]] = []
    for module in (common_pb2, stt_pb2, tts_pb2, llm_pb2):
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            out.append(getattr(module, desc.name))
    return out


def is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == F.LABEL_REPEATED


# ---- plain values -------------------------------------------------------------------------------

ints = st.integers(-(2**63), 2**63 - 1)
"""Integers msgpack can carry (JSON could carry more, but the services' ints are at most 64 bits)."""
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(allow_nan=True),
    st.text(max_size=40), st.binary(max_size=40),
)
msgpack_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
huge_text = st.integers(*HUGE_CHARS).map(lambda n: "x" * n)


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def wrong_value(field: FieldDescriptor, *, json_safe: bool) -> st.SearchStrategy[Any]:
    """A value the field cannot take (so a map carrying it is never a valid message)."""
    nested = st.dictionaries(st.text(max_size=8), ints, min_size=1, max_size=3)
    if is_repeated(field):
        return st.integers(-5, 5)
    if field.type == F.TYPE_MESSAGE:
        bad_inner = st.sampled_from(list(field.message_type.fields)).flatmap(
            lambda f: wrong_value(f, json_safe=json_safe).map(lambda v, f=f: {f.name: v})
        ) if field.message_type.fields else st.just({"not_a_field": 1})
        return st.one_of(ints, st.text(min_size=1, max_size=20), st.lists(ints, min_size=1, max_size=3),
                         bad_inner, nested.map(lambda d: {"no_such_field_" + k: v for k, v in d.items()}))
    if field.type in (F.TYPE_STRING, F.TYPE_BYTES):
        return st.one_of(st.lists(ints, min_size=1, max_size=3), nested,
                         st.floats(allow_nan=False).filter(lambda x: x != int(x) if math.isfinite(x) else True)
                         if not json_safe else st.lists(st.text(max_size=5), min_size=1, max_size=2),
                         st.lists(huge_text, min_size=1, max_size=1))
    if field.type in INT_TYPES or field.type == F.TYPE_ENUM:
        out_of_range = st.integers(2**32, 2**63 - 1) if field.type in INT32_TYPES or field.type == F.TYPE_ENUM \
            else st.just([1])
        names = {v.name for v in field.enum_type.values} if field.type == F.TYPE_ENUM else set()
        return st.one_of(st.floats(0.1, 1e6).filter(lambda x: x != int(x)), out_of_range, nested,
                         st.lists(ints, min_size=1, max_size=3),
                         st.text(min_size=1, max_size=20).filter(lambda s: s not in names and _not_a_number(s)))
    if field.type in FLOAT_TYPES:
        return st.one_of(st.text(min_size=1, max_size=20).filter(_not_a_number), nested,
                         st.lists(ints, min_size=1, max_size=3))
    return st.one_of(st.text(min_size=1, max_size=20).filter(lambda s: s not in ("true", "false")), nested,
                     st.lists(ints, min_size=1, max_size=3))


def _not_a_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return True
    return False


def wrong_fields(desc: Descriptor, *, json_safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    """A map of the message's own field names where at least one value has the wrong type."""
    if not desc.fields:
        return st.dictionaries(st.text(min_size=1, max_size=12), msgpack_values if not json_safe else json_values,
                               min_size=1, max_size=3)
    fields = list(desc.fields)
    return st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique_by=lambda f: f.name).flatmap(
        lambda chosen: st.fixed_dictionaries({f.name: wrong_value(f, json_safe=json_safe) for f in chosen})
    )


def deep_msgpack(field_name: str | None) -> st.SearchStrategy[bytes]:
    """Lists or maps nested hundreds to thousands deep, at the top or under a real field."""
    def build(depth: int, as_map: bool) -> bytes:
        inner = (b"\x81\xa1a" * depth if as_map else b"\x91" * depth) + b"\xc0"
        return (b"\x81" + pack(field_name)[:] + inner) if field_name else inner
    return st.builds(build, st.integers(100, 5000), st.booleans())


def deep_json(field_name: str | None) -> st.SearchStrategy[bytes]:
    def build(depth: int, as_map: bool) -> bytes:
        inner = ('{"a":' * depth + "1" + "}" * depth) if as_map else ("[" * depth + "]" * depth)
        return (f'{{"{field_name}": {inner}}}' if field_name else inner).encode()
    return st.builds(build, st.integers(100, 100_000), st.booleans())


# ---- whole bodies -------------------------------------------------------------------------------

def msgpack_bodies(request: type[Message]) -> st.SearchStrategy[bytes]:
    desc = request.DESCRIPTOR
    name = desc.fields[0].name if desc.fields else None
    valid_ish = st.fixed_dictionaries({}, optional={f.name: scalars for f in desc.fields}).map(pack)
    return st.one_of(
        st.binary(max_size=512),
        msgpack_values.filter(lambda v: not isinstance(v, dict)).map(pack),
        wrong_fields(desc, json_safe=False).map(pack),
        st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: k not in desc.fields_by_name),
                        msgpack_values, min_size=1, max_size=3).map(pack),
        st.dictionaries(st.binary(min_size=1, max_size=8), ints, min_size=1, max_size=2).map(pack),
        st.tuples(valid_ish, st.integers(1, 10_000)).filter(lambda t: len(t[0]) > 1)
        .map(lambda t: t[0][: max(1, min(t[1], len(t[0]) - 1))]),
        st.tuples(valid_ish, st.binary(min_size=1, max_size=16)).map(lambda t: t[0] + t[1]),
        deep_msgpack(name), deep_msgpack(None),
        huge_text.map(lambda s: pack({"no_such_field": s})),
    )


def json_bodies(request: type[Message]) -> st.SearchStrategy[bytes]:
    desc = request.DESCRIPTOR
    name = desc.fields[0].name if desc.fields else None
    return st.one_of(
        st.binary(max_size=512),
        st.text(max_size=200).map(str.encode),
        json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
        wrong_fields(desc, json_safe=True).map(lambda d: json.dumps(d).encode()),
        st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: k not in desc.fields_by_name),
                        json_values, min_size=1, max_size=3).map(lambda d: json.dumps(d).encode()),
        st.sampled_from([f.name for f in desc.fields] or ["x"]).map(
            lambda k: ('{"' + k + '": "\\ud800"}').encode()),  # an unpaired surrogate
        st.binary(min_size=1, max_size=8).map(lambda b: b'{"' + b + b'\xff": 1}'),  # not UTF-8
        deep_json(name), deep_json(None),
        huge_text.map(lambda s: json.dumps({"no_such_field": s}).encode()),
    )


def frame_bodies(request: type[Message], fmt: str) -> st.SearchStrategy[bytes]:
    """The body of a bidirectional HTTP call: a sequence of frames, some of them broken."""
    good = st.just({"data": {}})
    if fmt == "msgpack":
        bad = msgpack_bodies(request) | wrong_fields(request.DESCRIPTOR, json_safe=False).map(
            lambda d: pack({"data": d}))
        return st.lists(good.map(pack) | bad, min_size=1, max_size=3).map(b"".join)
    bad_json = json_bodies(request).map(lambda b: b.replace(b"\n", b" ")) | wrong_fields(
        request.DESCRIPTOR, json_safe=True).map(lambda d: json.dumps({"data": d}).encode())
    return st.lists(good.map(lambda d: json.dumps(d).encode()) | bad_json, min_size=1, max_size=3).map(
        lambda frames: b"\n".join(frames) + b"\n")


# ---- protobufs ----------------------------------------------------------------------------------

def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        return st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)
    if field.type == F.TYPE_MESSAGE:
        value: st.SearchStrategy[Any] = proto_fields(field.message_type, depth + 1) if depth < 3 else st.just({})
    elif field.type == F.TYPE_STRING:
        value = st.text(max_size=24)
    elif field.type == F.TYPE_BYTES:
        value = st.binary(max_size=64)
    elif field.type == F.TYPE_BOOL:
        value = st.booleans()
    elif field.type == F.TYPE_ENUM:
        value = st.sampled_from([v.number for v in field.enum_type.values])
    elif field.type in FLOAT_TYPES:
        value = st.floats(width=32 if field.type == F.TYPE_FLOAT else 64)
    elif field.type in INT32_TYPES:
        value = st.integers(-(2**31), 2**31 - 1)
    elif field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
        value = st.integers(0, 2**32 - 1)
    elif field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        value = st.integers(0, 2**64 - 1)
    else:
        value = st.integers(-(2**63), 2**63 - 1)
    return st.lists(value, max_size=3) if is_repeated(field) else value


def proto_fields(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random field values of ``desc`` (at most one member per oneof), as a constructor's kwargs."""
    free = [f for f in desc.fields if f.containing_oneof is None]
    oneofs = list(desc.oneofs)
    base = st.fixed_dictionaries({}, optional={f.name: _field_value(f, depth) for f in free})
    if not oneofs:
        return base

    def add_oneof(d: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        pick = st.sampled_from([f for o in oneofs for f in o.fields])
        return pick.flatmap(lambda f: _field_value(f, depth).map(lambda v, f=f: {**d, f.name: v}))

    return base.flatmap(lambda d: add_oneof(d) | st.just(d))


def proto_messages(cls: type[Message]) -> st.SearchStrategy[bytes]:
    return proto_fields(cls.DESCRIPTOR).map(lambda kw: cls(**kw).SerializeToString())


def not_utf8_string(desc: Descriptor) -> st.SearchStrategy[bytes]:
    """A string field of ``desc`` (or field 1) carrying bytes that are not UTF-8."""
    strings = [f.number for f in desc.fields if f.type == F.TYPE_STRING] or [1]
    def build(number: int, junk: bytes) -> bytes:
        return bytes([(number << 3) | 2, len(junk)]) + junk
    return st.builds(build, st.sampled_from(strings), st.binary(min_size=1, max_size=60).filter(_not_utf8))


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return True
    return False


def grpc_bodies(request: type[Message]) -> st.SearchStrategy[bytes]:
    """One gRPC request body: random bytes, another message, a truncated or non-UTF-8 one."""
    others = [m for m in all_messages() if m is not request]
    own = proto_messages(request)
    return st.one_of(
        st.binary(max_size=512),
        st.sampled_from(others).flatmap(proto_messages),
        st.tuples(own, st.integers(1, 512)).filter(lambda t: len(t[0]) > 1)
        .map(lambda t: t[0][: max(1, min(t[1], len(t[0]) - 1))]),
        own.map(lambda b: b + b"\xff\xff\xff"),
        not_utf8_string(request.DESCRIPTOR),
    )
