"""Monitoring routes: Prometheus http_sd targets for main and every service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
