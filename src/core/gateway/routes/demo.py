"""The browser demo page at ``/`` and its static files (no build step, no CDN)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
