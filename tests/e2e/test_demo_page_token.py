"""The demo page in a real headless Chromium against a main with auth on: the page asks for a key
once, swaps it for a 10-minute client token, keeps no copy of the key, and talks to the agent over
/ws/voice with ``?token=``.

Main runs with an admin key in the env and a client key (by hash) in the keys file; the person at
the page types the client key. Afterwards nothing in the page (DOM, sessionStorage, localStorage)
holds the key, the token it kept expires in 10 minutes, a spoken question gets its spoken answer,
and main's log shows the socket's query with the token masked.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.helpers.access import KEYS, auth_env, write_keys_file
from tests.helpers.browser import demo_browser, fake_mic_wav
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.stack import MainProcess, dump_logs, make_config_dir, running_main, stack_env
from tests.helpers.text import word_error_rate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(bool(netns_unavailable()), reason=netns_unavailable() or "netns available"),
]

QUESTION = "What is the capital of France?"
CLIENT_KEY = KEYS["alice"][1]


@pytest.fixture(scope="module")
def main_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    base = tmp_path_factory.mktemp("demo-token")
    config = make_config_dir(base / "config")
    write_keys_file(config)
    env = stack_env(base / "var", config, **auth_env())
    with loopback_netns("uvtoken"), running_main(base / "var", env, "demo_token") as m:
        yield m


def test_the_page_swaps_the_key_for_a_token_and_keeps_no_key(main_with_auth: MainProcess, tmp_path: Path) -> None:
    m = main_with_auth
    mic = fake_mic_wav(tmp_path / "question.wav", [1.0, QUESTION, 120.0])
    with demo_browser(mic) as page:
        try:
            page.page.goto(f"{m.url}/?transport=ws&aec=0&agc=0&ns=0")
            page.poll("the key prompt (main answered 401)", "!document.querySelector('#apikey-row').hidden", 60)
            assert page.page.evaluate("document.querySelector('#agent').options.length") == 0
            page.page.fill("#apikey", CLIENT_KEY)
            page.page.dispatch_event("#apikey", "change")
            page.poll("the agent picker filled with the token", "document.querySelector('#agent').options.length > 0",
                      60)
            kept = page.page.evaluate(
                "JSON.stringify({session: {...sessionStorage}, local: {...localStorage}, "
                "field: document.querySelector('#apikey').value, html: document.documentElement.outerHTML})"
            )
            assert CLIENT_KEY not in kept, "the page kept the API key"
            token = json.loads(json.loads(kept)["session"]["uvDemoToken"])["token"]
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["role"] == "client" and claims["sub"] == "alice", claims
            assert claims["exp"] - claims["iat"] == 600 and claims["exp"] > time.time()
            assert page.page.evaluate("document.querySelector('#apikey-row').hidden")

            page.connect()
            state = page.wait_for("a completed turn", lambda s: len(s["outcomes"]) >= 1)
            assert word_error_rate(QUESTION, state["finalTranscripts"][0]) <= 0.35, state["finalTranscripts"]
            assert state["outcomes"][0]["outcome"] == "ok", state["outcomes"]
            assert "paris" in state["assistantTexts"][0].lower(), state["assistantTexts"]
            page.wait_for("reply audio", lambda s: s["replySamples"] > 0)
            assert CLIENT_KEY not in page.page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
            page.connect()  # disconnect
            page.wait_for("disconnect", lambda s: s["status"] == "idle", timeout=30)
        except BaseException:
            page.dump("demo_token")
            print(f"\n===== main stdout =====\n{m.main_log()}")
            dump_logs(m.var_dir, "demo_token")
            raise
    m.stop()
    logs = "\n".join(p.read_text(errors="replace") for p in [*(m.var_dir / "log").glob("*.log*"), m.stdout_path])
    assert "/ws/voice?token=***" in logs, "no masked token socket in main's log"
    assert token.rsplit(".", 1)[1] not in logs and CLIENT_KEY not in logs
    with contextlib.suppress(Exception):
        m.stop()
