"""Signalling bodies (docs/webrtc.md), parsed and checked before any peer connection exists.

Every way a body can be wrong is an ``InvalidArgument`` (HTTP 400) whose message says what to
send instead: an offer is ``{"sdp", "type": "offer", "config"?}`` with one sendrecv audio
m-line and a data channel; trickled candidates are ``{"candidates": [...]}`` in the browser's
``RTCIceCandidate.toJSON()`` shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.conversation.control import VoiceConfig, parse_control
from core.errors import InvalidArgument

MAX_SDP_CHARS = 64 * 1024
MAX_CANDIDATES = 64
OFFER_HINT = (
    'send {"sdp": pc.localDescription.sdp, "type": "offer"} after creating the "events" data channel, adding '
    "the microphone track and setLocalDescription(await pc.createOffer())"
)


class _OfferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: str
    config: dict[str, Any] | None = None


class _Candidate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # usernameFragment and friends are not needed

    candidate: str = Field(max_length=1024)
    sdpMid: str | None = None
    sdpMLineIndex: int | None = Field(default=None, ge=0)


class _CandidatesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidates: list[_Candidate] = Field(max_length=MAX_CANDIDATES)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined, for an OpenAPI ``requestBody`` (which has no $defs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(ref := node.get("$ref"), str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


OFFER_SCHEMA = inline_schema(_OfferBody)
"""What ``POST /api/offer`` reads (documented in OpenAPI; the route parses the raw body itself)."""
CANDIDATES_SCHEMA = inline_schema(_CandidatesBody)
"""What ``PATCH /api/offer/{pc_id}`` reads."""


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    voice: VoiceConfig


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"the body is not JSON ({e}); {what}") from e


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())


def parse_offer(raw: bytes, *, max_text_chars: int) -> Offer:
    """``POST /api/offer``'s body as an :class:`Offer` (see the module docstring)."""
    try:
        body = _OfferBody.model_validate(_json(raw, OFFER_HINT))
    except ValidationError as e:
        raise InvalidArgument(f"invalid offer: {_problems(e)}; {OFFER_HINT}") from e
    if body.type != "offer":
        raise InvalidArgument(f"type must be 'offer', got {body.type[:20]!r}; {OFFER_HINT}")
    check_offer_sdp(body.sdp)
    config = {**(body.config or {}), "type": "config"}
    try:
        voice = parse_control(json.dumps(config), max_text_chars=max_text_chars)
    except InvalidArgument as e:
        raise InvalidArgument(f"{e.message} (in the offer's config)") from e
    assert isinstance(voice, VoiceConfig)
    return Offer(body.sdp, voice)


def check_offer_sdp(sdp: str) -> None:
    """An offer with one sendrecv audio m-line and a data channel; anything else says what is missing."""
    if not sdp.startswith("v=0"):
        raise InvalidArgument(f"sdp does not look like an SDP offer (it must start with 'v=0'); {OFFER_HINT}")
    sections = re.split(r"\r?\n(?=m=)", sdp)[1:]
    audio = [s for s in sections if s.startswith("m=audio")]
    if not audio:
        raise InvalidArgument(
            "the offer has no audio m-line: add the microphone track (pc.addTrack(micTrack, stream)) before "
            "createOffer"
        )
    direction = re.search(r"^a=(sendonly|recvonly|inactive)\s*$", audio[0], re.MULTILINE)
    if direction:  # sendonly would connect but never get the reply; recvonly/inactive never send the mic
        raise InvalidArgument(
            f"the offer's audio m-line is {direction.group(1)}: the call needs both directions (the microphone up, "
            "the reply down); add the microphone with pc.addTrack or addTransceiver('audio', {direction: "
            "'sendrecv'})"
        )
    if not any(s.startswith("m=application") for s in sections):
        raise InvalidArgument(
            "the offer has no data channel: create it with pc.createDataChannel('events') before createOffer"
        )


def parse_candidates(raw: bytes) -> list[RTCIceCandidate | None]:
    """``PATCH /api/offer/{pc_id}``'s body: trickled candidates; None stands for end of candidates."""
    hint = 'send {"candidates": [{"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0}]}'
    try:
        body = _CandidatesBody.model_validate(_json(raw, hint))
    except ValidationError as e:
        raise InvalidArgument(f"invalid candidates: {_problems(e)}; {hint}") from e
    out: list[RTCIceCandidate | None] = []
    for i, c in enumerate(body.candidates):
        if not c.candidate.strip():
            out.append(None)
            continue
        if c.sdpMid is None and c.sdpMLineIndex is None:
            raise InvalidArgument(f"candidates.{i}: give sdpMid or sdpMLineIndex (as the browser's candidate has)")
        text = c.candidate.strip().removeprefix("a=")
        try:  # aiortc asserts on too few fields
            cand = candidate_from_sdp(text.removeprefix("candidate:"))
        except (ValueError, IndexError, AssertionError) as e:
            raise InvalidArgument(
                f"candidates.{i}: {c.candidate[:80]!r} is not an ICE candidate line ('candidate:<foundation> "
                "<component> <protocol> <priority> <address> <port> typ <type> ...')"
            ) from e
        cand.sdpMid, cand.sdpMLineIndex = c.sdpMid, c.sdpMLineIndex
        out.append(cand)
    return out
