"""Access logic without a server: keys, tokens, principals, route rules, JSON limits, config checks."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from core.access.guard import check_json_text, credential, json_depth_ok
from core.access.keys import KeyRing, digest, load_key_file, new_key
from core.access.policy import RULES, Rule, is_public, missing_rules, resolve
from core.access.principal import OPEN, Principal
from core.access.tokens import TokenIssuer, load_secret, looks_like_jwt
from core.config.models import AuthConfig, GatewayConfig
from core.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from core.logs import scrub
from core.sessions.store import ConversationStore

SECRET = b"s" * 40


def key_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "api_keys.yaml"
    p.write_text(text)
    return p


def test_keys_file_holds_hashes_and_names_roles(tmp_path: Path) -> None:
    k = new_key()
    assert k.startswith("uvk_") and len(k) > 40
    keys = load_key_file(key_file(tmp_path, f"- {{name: web, role: client, sha256: {digest(k)}}}\n"))
    ring = KeyRing(None, env_key="envkey-123", file_keys=keys)
    assert ring.enabled and ring.has_admin()
    p = ring.authenticate(k)
    assert (p.name, p.role, p.via) == ("web", "client", "key")
    assert ring.authenticate("envkey-123").role == "admin"
    with pytest.raises(Unauthenticated, match="unknown API key"):
        ring.authenticate("uvk_nope")
    assert not KeyRing(None).enabled


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- {name: web, role: client, key: plaintext}\n", "sha256"),
        ("- {name: web, role: king, sha256: " + "a" * 64 + "}\n", "role"),
        ("- {name: web, role: client, sha256: " + "a" * 64 + "}\n- {name: web, role: admin, sha256: "
         + "b" * 64 + "}\n", "unique: web"),
        ("- {name: 'no spaces', role: client, sha256: " + "a" * 64 + "}\n", "name"),
        ("{{{", "not valid YAML"),
    ],
)
def test_a_bad_keys_file_names_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_key_file(key_file(tmp_path, text))


def test_an_expired_key_says_when(tmp_path: Path) -> None:
    k = new_key()
    entry = f"- {{name: old, role: client, sha256: {digest(k)}, expires_at: {time.time() - 5}}}\n"
    ring = KeyRing(None, file_keys=load_key_file(key_file(tmp_path, entry)))
    with pytest.raises(Unauthenticated, match="API key 'old' expired at"):
        ring.authenticate(k)


async def test_api_keys_live_in_the_store_and_survive_a_new_ring(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        ring = KeyRing(store, env_key="root-key-xyz")
        key, secret = await ring.create("bot", "operator", by="UV_API_KEY")
        assert key.source == "api" and ring.authenticate(secret).role == "operator"
        with pytest.raises(InvalidArgument, match="exists"):
            await ring.create("bot", "client", by="x")
        with pytest.raises(InvalidArgument, match="use 1-64"):
            await ring.create("bad name!", "client", by="x")
        with pytest.raises(InvalidArgument, match="env config"):
            await ring.delete("UV_API_KEY", by="x")
        again = KeyRing(store)
        assert again.authenticate(secret).name == "bot"
        assert "sha256" not in again.get("bot").public()  # type: ignore[union-attr]
        await again.delete("bot", by="x")
        with pytest.raises(Unauthenticated):
            again.authenticate(secret)
        with pytest.raises(NotFound):
            await again.delete("bot", by="x")
    finally:
        await store.close()


async def test_tokens_round_trip_and_refusals_say_why(tmp_path: Path) -> None:
    issuer = TokenIssuer(SECRET, None, default_ttl_s=600, max_ttl_s=3600)
    by = Principal("web", "client", "key")
    out = await issuer.mint(by, session_id="s1", agent="assistant")
    assert looks_like_jwt(out["token"]) and out["expires_in"] == 600 and out["session_id"] == "s1"
    p = issuer.verify(out["token"])
    assert (p.name, p.role, p.via, p.session_id, p.agent) == ("web", "client", "token", "s1", "assistant")
    now = int(time.time())
    claims = {"sub": "web", "role": "client", "iat": now - 100, "exp": now - 10, "jti": "a" * 32,
              "iss": "ultravox-pipeline"}
    with pytest.raises(Unauthenticated, match="has expired"):
        issuer.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    with pytest.raises(Unauthenticated, match="signature does not match"):
        issuer.verify(jwt.encode({**claims, "exp": now + 60}, b"o" * 40, algorithm="HS256"))
    with pytest.raises(Unauthenticated, match="role is not 'client'"):
        issuer.verify(jwt.encode({**claims, "exp": now + 60, "role": "admin"}, SECRET, algorithm="HS256"))
    with pytest.raises(Unauthenticated, match="not a valid token"):
        issuer.verify(jwt.encode({**claims, "exp": now + 60, "iss": "someone"}, SECRET, algorithm="HS256"))
    with pytest.raises(Unauthenticated, match="not a valid token"):
        issuer.verify(jwt.encode({**claims, "exp": now + 60}, None, algorithm="none"))   # unsigned
    with pytest.raises(InvalidArgument, match="between 10 and 3600"):
        await issuer.mint(by, ttl_s=7200)
    with pytest.raises(PermissionDenied, match="cannot mint"):
        await issuer.mint(p)


async def test_revocation_is_kept_in_the_store(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        issuer = TokenIssuer(SECRET, store, default_ttl_s=600, max_ttl_s=3600)
        web, other = Principal("web", "client", "key"), Principal("other", "client", "key")
        out = await issuer.mint(web)
        with pytest.raises(NotFound, match="minted by this key"):
            await issuer.revoke(out["jti"], other)
        with pytest.raises(InvalidArgument, match="32 hex digits"):
            await issuer.revoke("../etc", web)
        with pytest.raises(PermissionDenied):
            await issuer.revoke(out["jti"], issuer.verify(out["token"]))
        await issuer.revoke(out["jti"], web)
        with pytest.raises(Unauthenticated, match="revoked"):
            issuer.verify(out["token"])
        fresh = TokenIssuer(SECRET, None, default_ttl_s=600, max_ttl_s=3600)
        fresh.attach_store(store)   # a restarted main
        with pytest.raises(Unauthenticated, match="revoked"):
            fresh.verify(out["token"])
        admin = Principal("root", "admin", "key")
        second = await issuer.mint(web)
        assert (await fresh.revoke(second["jti"], admin))["revoked"] is True
    finally:
        await store.close()


def test_the_secret_file_is_made_once_private_and_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "jwt_secret"
    first = load_secret("", path)
    assert len(first) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_secret("", path) == first
    assert load_secret("e" * 40, path) == b"e" * 40
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_secret("short", path)


def test_principal_scope_and_session_ownership() -> None:
    tok = Principal("web", "client", "token", session_id="s1", agent="assistant")
    assert tok.scope(None, None) == ("s1", "assistant")
    with pytest.raises(PermissionDenied, match="scoped to session 's1'"):
        tok.scope("s2", None)
    with pytest.raises(PermissionDenied, match="scoped to agent"):
        tok.scope(None, "pirate")
    tok.check_session("s1", "web", "assistant")
    with pytest.raises(NotFound):   # another key's session reads as unknown
        Principal("bob", "client", "key").check_session("s1", "web")
    Principal("ops", "operator", "key").check_session("s1", "web")
    OPEN.check_session("s1", "web")
    assert not tok.sees_all_sessions and Principal("a", "admin", "key").sees_all_sessions


def test_route_rules() -> None:
    assert is_public("/static/app.js", ["/static/*"]) and is_public("/health", ["/health"])
    assert not is_public("/healthz", ["/health"]) and not is_public("/staticx", ["/static/*"])
    action = RULES[("POST", "/services/{name}/{action}")]
    assert action.role_for({"action": "restart"}) == "operator" and action.role_for({"action": "stop"}) == "admin"
    assert missing_rules([("GET", "/services"), ("GET", "/brand-new")]) == ["GET /brand-new"]
    import re
    table = [("GET", "/api/sessions/{session_id}", re.compile(r"^/api/sessions/(?P<session_id>[^/]+)$"))]
    rule, params = resolve(table, "HEAD", "/api/sessions/abc")
    assert rule.limited and params == {"session_id": "abc"}
    assert resolve(table, "GET", "/nowhere") == (Rule("client"), {})


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth_ok('{"a": "[[[[[[[[[[[[[[[[[["}', 3)
    assert json_depth_ok('{"a": "\\"[[[[["}', 2)
    assert not json_depth_ok("[[[[1]]]]", 3)
    with pytest.raises(InvalidArgument, match="nests deeper than 3 levels"):
        check_json_text(b"[[[[[]]]]]", 3)


def test_credential_sources() -> None:
    def scope(kind: str, headers: dict[str, str], query: str = "") -> dict[str, object]:
        return {"type": kind, "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                "query_string": query.encode()}
    assert credential(scope("http", {"authorization": "Bearer abc"})) == "abc"
    assert credential(scope("http", {"x-api-key": "k"})) == "k"
    assert credential(scope("http", {}, "token=t")) == ""   # HTTP takes headers only
    assert credential(scope("websocket", {}, "token=t")) == "t"
    assert credential(scope("websocket", {}, "api_key=k")) == "k"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: GatewayConfig(cors_origins=["*"]), "'\\*' is refused"),
        (lambda: GatewayConfig(cors_origins=["app.example.com"]), "not an origin"),
        (lambda: AuthConfig(public_paths=["/a*b"]), "public path"),
        (lambda: AuthConfig(allowlist=["not-an-address"]), "allowlist entry"),
        (lambda: AuthConfig(token_ttl_s=4000), "less than or equal to 3600"),
    ],
)
def test_bad_access_config_is_refused(make: object, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        make()  # type: ignore[operator]


def test_tokens_and_made_keys_are_scrubbed_from_log_text() -> None:
    token = jwt.encode({"sub": "web", "exp": 2_000_000_000}, SECRET, algorithm="HS256")
    key = new_key()
    line = scrub(f"GET /ws/voice?token={token}&x=1 and {key} and bare {token}")
    assert token not in line and key not in line and "token=***" in line


async def test_a_token_dies_with_the_key_that_minted_it(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from core.access import Access, RateLimiter
    from core.config.models import RateLimits

    store = ConversationStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        ring = KeyRing(store, env_key="root-key-xyz")
        issuer = TokenIssuer(SECRET, store, default_ttl_s=600, max_ttl_s=3600)
        access = Access(GatewayConfig(), ring, issuer, RateLimiter(RateLimits()),
                        Counter("t_access", "t", ["key", "outcome"], registry=CollectorRegistry()))
        _, secret = await ring.create("web", "client", by="root")
        token = (await issuer.mint(ring.authenticate(secret)))["token"]
        assert access.authenticate(token).name == "web"
        await ring.delete("web", by="root")
        with pytest.raises(Unauthenticated, match="that minted this token was deleted"):
            access.authenticate(token)
    finally:
        await store.close()
