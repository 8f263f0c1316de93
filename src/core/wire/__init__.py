"""The service wire: which operations each role serves, and how messages travel.

``catalog`` names every operation once (gRPC path, HTTP path, message types); ``codec`` turns
messages into msgpack or proto3 JSON and back. Both the services and the hub import only this
package, never ``uvpb`` directly, so the generated code has one adapter.
"""

from core.wire.catalog import CONTROL_OPS, Kind, Operation, operation, operations
from core.wire.codec import from_json, from_msgpack, message_to_dict, to_json, to_message, to_msgpack

__all__ = [
    "CONTROL_OPS",
    "Kind",
    "Operation",
    "from_json",
    "from_msgpack",
    "message_to_dict",
    "operation",
    "operations",
    "to_json",
    "to_message",
    "to_msgpack",
]
