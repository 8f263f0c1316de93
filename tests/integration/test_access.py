"""Access on a real main: the role matrix over every route, client tokens, scopes, revocation that
survives a restart, rate limits, CORS and body limits.

One real ``main.py`` (with its STT, LLM and TTS services) runs with auth on: an admin key in
``$UV_API_KEY``, operator and client keys (hashed) in the keys file, and a known token secret.

The matrix is generated from the app's own route table: every route is called by no one, a client
key, an operator key, an admin key, a valid client token, an expired token, a tampered token and a
revoked token. ``EXPECTED`` below is this test's own statement of who may call what; a route
missing from it fails the test, so a new route cannot ship without a rule.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.config.loader import load_settings
from core.context import GlobalContext, Paths
from core.gateway.app import create_app, route_table
from tests.helpers.access import (
    ADMIN_KEY,
    KEYS,
    LIMITED_PER_MINUTE,
    auth_env,
    bearer,
    forged_token,
    tampered,
    write_keys_file,
)
from tests.helpers.stack import ROOT, MainProcess, make_config_dir, running_main, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ALLOWED_ORIGIN = "http://allowed.example:8000"
PUBLIC, CLIENT, OPERATOR, ADMIN, KEY_ONLY = "public", "client", "operator", "admin", "key-only"
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/favicon.ico"): PUBLIC,
    ("GET", "/static/{name:path}"): PUBLIC,
    ("GET", "/openapi.json"): CLIENT,
    ("GET", "/docs"): CLIENT,
    ("GET", "/docs/oauth2-redirect"): CLIENT,
    ("GET", "/redoc"): CLIENT,
    ("GET", "/services"): OPERATOR,
    ("GET", "/services/{name}"): OPERATOR,
    ("POST", "/services/{name}/{action}"): OPERATOR,   # called with action=restart; stop is admin (below)
    ("GET", "/services/{name}/logs"): ADMIN,
    ("POST", "/call"): ADMIN,
    **{(m, "/proxy/{service}/{path:path}"): ADMIN for m in ("GET", "POST", "PUT", "PATCH", "DELETE")},
    ("GET", "/metrics"): PUBLIC,   # public by config (Prometheus); operator when removed from public_paths
    ("GET", "/api/monitoring/targets"): OPERATOR,
    ("GET", "/api/webrtc/stats"): OPERATOR,
    ("GET", "/api/cluster"): OPERATOR,
    ("POST", "/api/cluster/deployments/{deployment}/scale"): OPERATOR,
    ("GET", "/api/resilience"): OPERATOR,
    ("POST", "/api/resilience/breakers/{service}/reset"): OPERATOR,
    ("GET", "/api/profiles"): OPERATOR,
    ("GET", "/api/profiles/{name}"): OPERATOR,
    ("POST", "/api/profiles/{name}/activate"): ADMIN,
    ("GET", "/api/keys"): ADMIN,
    ("POST", "/api/keys"): ADMIN,
    ("DELETE", "/api/keys/{name}"): ADMIN,
    ("POST", "/api/tokens"): KEY_ONLY,
    ("DELETE", "/api/tokens/{jti}"): KEY_ONLY,
    ("POST", "/api/orchestrator/conversation"): CLIENT,
    ("POST", "/api/orchestrator/conversation/audio"): CLIENT,
    ("GET", "/api/audio/{audio_id}.wav"): CLIENT,
    ("POST", "/api/sessions"): CLIENT,
    ("GET", "/api/sessions"): CLIENT,
    ("GET", "/api/sessions/{session_id}"): CLIENT,
    ("DELETE", "/api/sessions/{session_id}"): CLIENT,
    ("GET", "/api/sessions/{session_id}/transcript"): CLIENT,
    ("GET", "/api/agents"): CLIENT,
    ("POST", "/api/poll/{session_id}/text"): CLIENT,
    ("POST", "/api/poll/{session_id}/audio"): CLIENT,
    ("GET", "/api/poll/{session_id}/events"): CLIENT,
    ("WS", "/ws/voice"): CLIENT,
    ("GET", "/api/webrtc/config"): CLIENT,
    ("POST", "/api/offer"): CLIENT,
    ("PATCH", "/api/offer/{pc_id}"): CLIENT,
    ("DELETE", "/api/offer/{pc_id}"): CLIENT,
    ("POST", "/v1/audio/transcriptions"): CLIENT,
    ("POST", "/v1/audio/speech"): CLIENT,
    ("GET", "/v1/audio/voices"): CLIENT,
    ("POST", "/v1/chat/completions"): CLIENT,
    ("GET", "/v1/models"): CLIENT,
}
PARAMS = {
    "name": "nosuch", "action": "restart", "session_id": "no-such-session", "jti": "0" * 32, "pc_id": "nosuch",
    "audio_id": "nosuch", "service": "nosuch", "deployment": "nosuch", "path:path": "health", "name:path": "app.js",
}
RANK = {CLIENT: 0, OPERATOR: 1, ADMIN: 2}
CALLERS = ("nobody", "client", "operator", "admin", "token", "expired", "tampered", "revoked")


def fill(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: PARAMS[m.group(1)], template)


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    base = tmp_path_factory.mktemp("access")

    def edit(doc: dict[str, Any]) -> None:
        gw = doc["gateway"]
        gw["auth"]["rate_limits"] = {"per_minute": 100000, "per_hour": 0}
        gw["cors_origins"] = [ALLOWED_ORIGIN]

    config = make_config_dir(base / "config", edit)
    write_keys_file(config)
    env = stack_env(base / "var", config, **auth_env())
    with running_main(base / "var", env, "access") as m:
        yield m


MINTED: list[str] = []


def mint(m: MainProcess, key: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{m.url}/api/tokens", json=body, headers=bearer(key), timeout=30)
    assert r.status_code == 201, r.text
    MINTED.append(r.json()["token"])
    return dict(r.json())


def callers(m: MainProcess) -> dict[str, str]:
    valid = mint(m, KEYS["alice"][1])["token"]
    revoked = mint(m, KEYS["alice"][1])
    r = httpx.delete(f"{m.url}/api/tokens/{revoked['jti']}", headers=bearer(KEYS["alice"][1]), timeout=30)
    assert r.status_code == 200 and r.json()["revoked"] is True, r.text
    now = int(time.time())
    return {
        "nobody": "", "client": KEYS["alice"][1], "operator": KEYS["ops"][1], "admin": ADMIN_KEY,
        "token": valid, "expired": forged_token(iat=now - 1200, exp=now - 600),
        "tampered": tampered(valid), "revoked": revoked["token"],
    }


def expected(rule: str, caller: str) -> str:
    """'ok' (anything but 401/403), '401' or '403'."""
    if rule == PUBLIC:
        return "ok"
    if caller in ("nobody", "expired", "tampered", "revoked"):
        return "401"
    if caller == "token":
        return "ok" if rule == CLIENT else "403"
    if rule == KEY_ONLY:
        return "ok"
    return "ok" if RANK[caller] >= RANK[rule] else "403"


def call_http(m: MainProcess, method: str, path: str, cred: str) -> int:
    headers = bearer(cred) if cred else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    r = httpx.request(method, m.url + path, json=body, headers=headers, timeout=60)
    return r.status_code


def call_ws(m: MainProcess, path: str, cred: str) -> str:
    url = m.url.replace("http", "ws") + path + (f"?token={cred}" if cred else "")
    with connect(url, open_timeout=30) as ws:
        try:
            ws.send(json.dumps({"type": "config"}))
            event = json.loads(ws.recv(timeout=30))
        except ConnectionClosed as e:
            assert e.rcvd is not None
            return f"close {e.rcvd.code}: {e.rcvd.reason}"
        return str(event["type"])


def test_role_matrix_over_every_route(main_proc: MainProcess, tmp_path: Path) -> None:
    m = main_proc
    app = create_app(GlobalContext.create(
        load_settings(ROOT / "config", env={}),
        Paths(root=ROOT, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs"),
    ))
    routes = route_table(app)
    unruled = sorted(f"{meth} {p}" for meth, p in routes if (meth, p) not in EXPECTED)
    assert not unruled, f"routes with no expected role in this test (add them to EXPECTED): {unruled}"
    creds = callers(m)
    wrong: list[str] = []
    cells = 0
    for method, template in routes:
        rule = EXPECTED[(method, template)]
        path = fill(template)
        for who in CALLERS:
            want = expected(rule, who)
            cells += 1
            if method == "WS":
                got = call_ws(m, path, creds[who])
                ok = got == "ready" if want == "ok" else got.startswith("close 1008")
            else:
                status = call_http(m, method, path, creds[who])
                got = str(status)
                ok = status not in (401, 403) and status < 500 if want == "ok" else got == want
            if not ok:
                wrong.append(f"{method} {path} as {who}: want {want}, got {got}")
    assert not wrong, "\n".join(wrong)
    print(f"\nrole matrix: {len(routes)} routes x {len(CALLERS)} callers = {cells} calls, all as expected")
    # the one route whose parameter decides the role: operators restart, only admins stop
    assert call_http(m, "POST", "/services/nosuch/stop", KEYS["ops"][1]) == 403
    assert call_http(m, "POST", "/services/nosuch/stop", ADMIN_KEY) == 404


def test_refusals_say_what_is_wrong(main_proc: MainProcess) -> None:
    m = main_proc
    url = f"{m.url}/api/agents"
    r = httpx.get(url, timeout=30)
    assert r.status_code == 401 and "needs an API key or a client token" in r.json()["error"]["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.get(url, headers=bearer(KEYS["old"][1]), timeout=30)
    assert r.status_code == 401 and "API key 'old' expired" in r.json()["error"]["message"]
    r = httpx.get(url, headers=bearer("uvk_not-a-key-at-all-000000000000"), timeout=30)
    assert r.status_code == 401 and "unknown API key" in r.json()["error"]["message"]
    now = int(time.time())
    r = httpx.get(url, headers=bearer(forged_token(iat=now - 900, exp=now - 300)), timeout=30)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    r = httpx.get(url, headers=bearer(forged_token(secret="another-server-secret-0123456789abcdef")), timeout=30)
    assert r.status_code == 401 and "signature does not match" in r.json()["error"]["message"]
    r = httpx.get(f"{m.url}/services", headers=bearer(KEYS["alice"][1]), timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == "this route needs role operator; the key 'alice' has role client"


def test_operator_restarts_a_service_but_cannot_mint_keys(main_proc: MainProcess) -> None:
    m = main_proc
    ops = bearer(KEYS["ops"][1])
    r = httpx.post(f"{m.url}/api/keys", json={"name": "sneaky", "role": "admin"}, headers=ops, timeout=30)
    assert r.status_code == 403 and "needs role admin" in r.json()["error"]["message"]
    r = httpx.post(f"{m.url}/services/tts/restart", headers=ops, timeout=120)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 180
    while httpx.get(f"{m.url}/services/tts", headers=ops, timeout=30).json()["state"] != "RUNNING":
        assert time.monotonic() < deadline, "tts did not come back after the operator's restart"
        time.sleep(0.5)
    # an admin makes a key through the API: it works at once, is listed without its hash, and goes
    admin = bearer(ADMIN_KEY)
    r = httpx.post(f"{m.url}/api/keys", json={"name": "ci-bot", "role": "client"}, headers=admin, timeout=30)
    assert r.status_code == 201, r.text
    new_key = r.json()["key"]
    assert new_key.startswith("uvk_") and r.json()["role"] == "client"
    assert httpx.get(f"{m.url}/api/agents", headers=bearer(new_key), timeout=30).status_code == 200
    listed = httpx.get(f"{m.url}/api/keys", headers=admin, timeout=30).json()["keys"]
    assert {"ci-bot", "alice", "ops", "UV_API_KEY"} <= {k["name"] for k in listed}
    assert new_key not in json.dumps(listed) and "sha256" not in json.dumps(listed)
    dup = httpx.post(f"{m.url}/api/keys", json={"name": "ci-bot", "role": "admin"}, headers=admin, timeout=30)
    assert dup.status_code == 400 and "exists" in dup.json()["error"]["message"]
    assert httpx.delete(f"{m.url}/api/keys/ci-bot", headers=admin, timeout=30).status_code == 200
    assert httpx.get(f"{m.url}/api/agents", headers=bearer(new_key), timeout=30).status_code == 401


def test_a_session_scoped_token_sees_only_its_session(main_proc: MainProcess) -> None:
    m = main_proc
    alice, bob = bearer(KEYS["alice"][1]), bearer(KEYS["bob"][1])
    for sid in ("alice-one", "alice-two"):
        r = httpx.post(f"{m.url}/api/sessions", json={"session_id": sid}, headers=alice, timeout=30)
        assert r.status_code == 201, r.text
    tok = mint(m, KEYS["alice"][1], session_id="alice-one", ttl_s=600)
    assert tok["session_id"] == "alice-one" and tok["role"] == "client" and tok["expires_in"] == 600
    t = bearer(tok["token"])
    assert httpx.get(f"{m.url}/api/sessions/alice-one", headers=t, timeout=30).status_code == 200
    r = httpx.get(f"{m.url}/api/sessions/alice-two", headers=t, timeout=30)
    assert r.status_code == 403 and "scoped to session 'alice-one'" in r.json()["error"]["message"]
    assert [s["session_id"] for s in httpx.get(f"{m.url}/api/sessions", headers=t, timeout=30).json()["sessions"]] \
        == ["alice-one"]
    # another client key sees neither of alice's sessions (they read as unknown), an operator sees both
    assert httpx.get(f"{m.url}/api/sessions/alice-one", headers=bob, timeout=30).status_code == 404
    assert httpx.get(f"{m.url}/api/sessions/alice-one/transcript", headers=bob, timeout=30).status_code == 404
    assert httpx.delete(f"{m.url}/api/sessions/alice-one", headers=bob, timeout=30).status_code == 404
    r = httpx.post(f"{m.url}/api/tokens", json={"session_id": "alice-one"}, headers=bob, timeout=30)
    assert r.status_code == 404, r.text
    listed = httpx.get(f"{m.url}/api/sessions", headers=bearer(KEYS["ops"][1]), timeout=30).json()["sessions"]
    assert {"alice-one", "alice-two"} <= {s["session_id"] for s in listed}
    # over the socket: the scoped session opens by default, another one is refused, the socket stays
    url = m.url.replace("http", "ws") + f"/ws/voice?token={tok['token']}"
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "config"}))
        ready = json.loads(ws.recv(timeout=30))
        assert ready["type"] == "ready" and ready["session_id"] == "alice-one", ready
        ws.send(json.dumps({"type": "config", "session_id": "alice-two"}))
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and err["code"] == "PERMISSION_DENIED", err
        ws.send(json.dumps({"type": "reset"}))
        err = json.loads(ws.recv(timeout=30))
        assert err["code"] == "PERMISSION_DENIED" and "scoped to one session" in err["message"], err
        # a token cannot mint tokens
    r = httpx.post(f"{m.url}/api/tokens", json={}, headers=t, timeout=30)
    assert r.status_code == 403 and "cannot mint" in r.json()["error"]["message"]


def test_a_text_turn_with_a_token_over_the_socket(main_proc: MainProcess) -> None:
    tok = mint(main_proc, KEYS["bob"][1])
    assert 590 <= tok["expires_at"] - time.time() <= 600   # 10 minutes by default
    url = main_proc.url.replace("http", "ws") + f"/ws/voice?token={tok['token']}"
    with connect(url, open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"type": "config", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send(json.dumps({"type": "text", "text": "What is the capital of France?"}))
        audio = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=240)
            if isinstance(msg, bytes):
                audio += len(msg)
                continue
            event = json.loads(msg)
            if event["type"] == "turn_complete":
                assert event["outcome"] == "ok" and "paris" in event["assistant_text"].lower(), event
                break
        assert audio > 16000, "no reply audio over the token's socket"


def test_rate_limits_per_key_say_when_to_retry(main_proc: MainProcess) -> None:
    m = main_proc
    key = bearer(KEYS["limited"][1])
    codes = [httpx.get(f"{m.url}/api/agents", headers=key, timeout=30).status_code for _ in range(LIMITED_PER_MINUTE)]
    r = httpx.get(f"{m.url}/api/agents", headers=key, timeout=30)
    assert codes == [200] * LIMITED_PER_MINUTE and r.status_code == 429, (codes, r.text)
    assert int(r.headers["retry-after"]) >= 1 and "API key 'limited'" in r.json()["error"]["message"]
    assert httpx.get(f"{m.url}/api/agents", headers=bearer(KEYS["bob"][1]), timeout=30).status_code == 200
    metrics = httpx.get(f"{m.url}/metrics", headers=bearer(KEYS["ops"][1]), timeout=30).text
    assert re.search(r'ultravox_rate_limited_total\{key="limited",window="minute"\} [1-9]', metrics), "no metric"
    assert re.search(r'ultravox_access_total\{key="limited",outcome="rate_limited"\} [1-9]', metrics)
    assert re.search(r'ultravox_access_total\{key="limited",outcome="allowed"\} [5-9]', metrics)
    assert re.search(r'ultravox_access_total\{key="-",outcome="unauthenticated"\} [1-9]', metrics)


def test_cors_allows_only_the_listed_origin(main_proc: MainProcess) -> None:
    m = main_proc
    pre = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(f"{m.url}/api/tokens", headers={"origin": ALLOWED_ORIGIN, **pre}, timeout=30)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    bad = httpx.options(f"{m.url}/api/tokens", headers={"origin": "http://evil.example", **pre}, timeout=30)
    assert "access-control-allow-origin" not in bad.headers
    r = httpx.get(f"{m.url}/api/agents", headers={"origin": ALLOWED_ORIGIN, **bearer(KEYS["bob"][1])}, timeout=30)
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert r.headers.get("access-control-allow-origin") != "*"
    tok = mint(m, KEYS["bob"][1])["token"]
    url = m.url.replace("http", "ws") + f"/ws/voice?token={tok}"
    with connect(url, open_timeout=30, origin="http://evil.example") as ws, \
            pytest.raises(ConnectionClosed) as closed:   # type: ignore[arg-type]
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "gateway.cors_origins" in closed.value.rcvd.reason
    with connect(url, open_timeout=30, origin=ALLOWED_ORIGIN) as ws:   # type: ignore[arg-type]
        ws.send(json.dumps({"type": "config"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"


def test_json_bodies_and_messages_are_bounded(main_proc: MainProcess) -> None:
    m = main_proc
    key = bearer(KEYS["bob"][1])
    big = b'{"message": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    r = httpx.post(f"{m.url}/api/orchestrator/conversation", content=big,
                   headers={**key, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "gateway.max_json_bytes" in r.json()["error"]["message"]
    deep = ("[" * 200 + "]" * 200).encode()
    r = httpx.post(f"{m.url}/api/sessions", content=deep, headers={**key, "content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 400 and "nests deeper than 32" in r.json()["error"]["message"]
    tok = mint(m, KEYS["bob"][1])["token"]
    with connect(m.url.replace("http", "ws") + f"/ws/voice?token={tok}", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "config"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send('{"type": "text", "x": ' + "[" * 5000 + "]" * 5000 + "}")
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and "nests deeper" in err["message"], err
        ws.send(json.dumps({"type": "config"}))   # the socket goes on
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"


def test_revocation_survives_a_restart(main_proc: MainProcess) -> None:
    m = main_proc
    tok = mint(m, KEYS["alice"][1])
    kept = mint(m, KEYS["alice"][1])
    assert httpx.delete(f"{m.url}/api/tokens/{tok['jti']}", headers=bearer(KEYS["bob"][1]), timeout=30).status_code \
        == 404, "bob revoked a token alice minted"
    assert httpx.delete(f"{m.url}/api/tokens/{tok['jti']}", headers=bearer(KEYS["alice"][1]), timeout=30).status_code \
        == 200
    m.stop()
    m.start()
    m.wait_healthy()
    r = httpx.get(f"{m.url}/api/agents", headers=bearer(tok["token"]), timeout=30)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert httpx.get(f"{m.url}/api/agents", headers=bearer(kept["token"]), timeout=30).status_code == 200


def test_sm_keys_and_token_against_the_real_main(main_proc: MainProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from core.cli.app import app

    runner = CliRunner()
    monkeypatch.setenv("SM_URL", main_proc.url)
    monkeypatch.setenv("UV_API_KEY", ADMIN_KEY)
    made = runner.invoke(app, ["keys", "create", "night-ops", "--role", "operator", "--expires-in", "1d"])
    assert made.exit_code == 0, made.output
    key = re.search(r"(uvk_\S+)", made.output)
    assert key is not None, made.output
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and re.search(r"night-ops\s+operator\s+api\s+expires in 2[34]h", listed.output), \
        listed.output
    monkeypatch.setenv("UV_API_KEY", key.group(1))   # now as the new operator key
    assert runner.invoke(app, ["list"]).exit_code == 0
    refused = runner.invoke(app, ["keys", "create", "escalate", "--role", "admin"])
    assert refused.exit_code != 0 and "needs role admin" in str(refused.exception), refused.output
    tok = runner.invoke(app, ["token", "create", "--ttl", "120"])
    assert tok.exit_code == 0 and tok.output.count(".") >= 2, tok.output
    monkeypatch.setenv("UV_API_KEY", ADMIN_KEY)
    assert runner.invoke(app, ["keys", "delete", "night-ops"]).exit_code == 0
    monkeypatch.setenv("UV_API_KEY", key.group(1))
    gone = runner.invoke(app, ["list"])
    assert gone.exit_code != 0 and "unknown API key" in str(gone.exception), gone.output


def test_no_key_token_or_secret_reached_a_log(main_proc: MainProcess) -> None:
    """Last in this module: every key, every token minted above and the signing secret are absent
    from main's and the services' logs (the logs saw them used in headers, queries and errors)."""
    from tests.helpers.access import JWT_SECRET

    assert MINTED, "the tests above minted no token"
    secrets = {"admin key": ADMIN_KEY, "token secret": JWT_SECRET,
               **{f"key {n}": k for n, (_, k) in KEYS.items()},
               **{f"token {i}": t.rsplit(".", 1)[1] for i, t in enumerate(MINTED)}}
    files = [*sorted((main_proc.var_dir / "log").glob("*.log*")), main_proc.stdout_path]
    assert len(files) >= 4, files
    for f in files:
        text = f.read_text(errors="replace")
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in {f.name}"
