"""A main with auth on, for tests: an admin key in the env, more keys (by hash) in the keys file,
and a known token secret, so tests can also forge expired or foreign tokens."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import jwt
import yaml

ADMIN_KEY = "uvk_admin-test-key-0123456789abcdefXYZ"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
KEYS: dict[str, tuple[str, str]] = {   # name -> (role, key)
    "ops": ("operator", "uvk_operator-test-key-9876543210abcdef"),
    "alice": ("client", "uvk_alice-client-key-aaaaaaaaaaaaaaaaa"),
    "bob": ("client", "uvk_bob-client-key-bbbbbbbbbbbbbbbbbbbb"),
    "limited": ("client", "uvk_limited-client-key-lllllllllllllll"),
    "old": ("client", "uvk_expired-client-key-eeeeeeeeeeeeeee"),
}
LIMITED_PER_MINUTE = 5


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_keys_file(config_dir: Path) -> Path:
    entries: list[dict[str, Any]] = []
    for name, (role, key) in KEYS.items():
        entry: dict[str, Any] = {"name": name, "role": role, "sha256": sha256(key)}
        if name == "limited":
            entry["rate_limits"] = {"per_minute": LIMITED_PER_MINUTE, "per_hour": 1000}
        if name == "old":
            entry["expires_at"] = time.time() - 60
        entries.append(entry)
    path = config_dir / "api_keys.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def auth_env() -> dict[str, str]:
    return {"UV_API_KEY": ADMIN_KEY, "UV_JWT_SECRET": JWT_SECRET}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def forged_token(secret: str = JWT_SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "role": "client", "iat": now, "exp": now + 600, "jti": "f" * 32,
            "iss": "ultravox-pipeline", **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def tampered(token: str) -> str:
    """The same token with its payload changed (a different subject), signature kept."""
    head, payload, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "mallory"
    other = jwt.encode(claims, "x" * 40, algorithm="HS256").split(".")[1]
    assert other != payload
    return f"{head}.{other}.{sig}"
