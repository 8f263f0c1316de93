"""WebRTC signalling (docs/webrtc.md): POST /api/offer, PATCH/DELETE /api/offer/{pc_id}, GET /api/webrtc/config."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
