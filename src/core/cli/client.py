"""A thin HTTP client for main's control API, with errors a person can act on."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class MainUnreachable(Exception):
    pass


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"{code} ({status}): {message}")


class ControlClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("SM_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("UV_API_KEY", "")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, *, ok_statuses: tuple[int, ...] = (), **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.ConnectError as e:
            raise MainUnreachable(
                f"main is not running at {self.url} (connection refused). Start it with ./start.sh, "
                "or point sm at it with --url or SM_URL."
            ) from e
        except httpx.TimeoutException as e:
            raise MainUnreachable(f"main at {self.url} did not answer {method} {path} in time ({e}).") from e
        if r.status_code >= 400 and r.status_code not in ok_statuses:
            try:
                err = r.json().get("error", {})
                code, msg = err.get("code", "ERROR"), err.get("message", r.text)
            except ValueError:
                code, msg = "ERROR", r.text
            raise ApiError(r.status_code, code, msg)
        ctype = r.headers.get("content-type", "")
        return r.json() if ctype.startswith("application/json") else r.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def resilience(self) -> Any:
        """``GET /api/resilience``: breakers, protocol down marks and retry counts per service."""
        return self.get("/api/resilience")

    def reset_breaker(self, service: str) -> Any:
        """``POST /api/resilience/breakers/{service}/reset``; the name is path-quoted as given."""
        return self.post(f"/api/resilience/breakers/{quote(service, safe='')}/reset")
