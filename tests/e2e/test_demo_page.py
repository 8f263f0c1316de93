"""The demo page in a real headless Chromium, talking to a real main over WebSocket and WebRTC.

Main (with its STT, LLM and TTS services) and the browser both run inside a loopback-only
network namespace, so ICE finds 127.0.0.1 and nothing else. Chromium's fake microphone plays a
Piper WAV with the page's echo cancellation, auto-gain and noise suppression off. For each
transport the page must show the final transcript of the question, the assistant's text, reply
audio counted by the page's own audio graph, and the latency panel; screenshots at desktop and
phone width go to $UV_TEST_LOG_DIR/screenshots. Over WebRTC the latency panel also shows the
browser's jitter buffer, and a second utterance, spoken while a long reply plays, must interrupt it:
the reply's audio at the page stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import DemoPage, demo_browser, fake_mic_wav
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.stack import MainProcess, dump_logs, make_config_dir, running_main, stack_env
from tests.helpers.text import word_error_rate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(bool(netns_unavailable()), reason=netns_unavailable() or "netns available"),
]

QUESTION = "What is the capital of France?"
STORY = "Please tell me a long story about a brave knight and a dragon."
BARGE_IN = "Stop. What is the capital of Italy?"
STORYTELLER = """\
description: Tells long stories (the barge-in test needs a reply that plays for a long time).
system_prompt: >-
  You are a storyteller. Whatever you are asked, answer with a long story of at least fifteen
  sentences of plain spoken English, no lists and no markdown.
language: en
tts_engine: piper
temperature: 0.3
max_tokens: 256                    # the LLM service allows at most 256
"""
NO_PROCESSING = {"aec": "0", "agc": "0", "ns": "0"}
REPLY_S = 0.5  # at least this much reply audio must reach the page's audio graph


@pytest.fixture(scope="module")
def main_in_netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    base = tmp_path_factory.mktemp("demo-page")
    config = make_config_dir(base / "config")
    (config / "agents" / "storyteller.yaml").write_text(STORYTELLER)
    with loopback_netns("uvdemo"), running_main(base / "var", stack_env(base / "var", config), "demo_page") as m:
        yield m


@contextlib.contextmanager
def page_for(main: MainProcess, mic: Path, label: str) -> Iterator[DemoPage]:
    """A browser on the page; on failure, print the page's event log and main's logs."""
    with demo_browser(mic) as page:
        try:
            yield page
        except BaseException:
            page.dump(label)
            print(f"\n===== {label}: main stdout =====\n{main.main_log()}")
            dump_logs(main.var_dir, label)
            raise


def one_turn(main: MainProcess, tmp_path: Path, transport: str) -> dict[str, Any]:
    mic = fake_mic_wav(tmp_path / "question.wav", [1.0, QUESTION, 120.0])
    with page_for(main, mic, f"demo_{transport}") as page:
        page.open(main.url, transport=transport, **NO_PROCESSING)
        agents = page.page.eval_on_selector_all("#agent option", "os => os.map(o => o.value)")
        assert {"assistant", "storyteller"} <= set(agents), agents
        # the voice list fills in from /v1/audio/voices (a TTS call) after the page loads; give it time
        page.page.wait_for_function("document.querySelectorAll('#voice option').length > 1", timeout=60_000)
        assert page.page.eval_on_selector_all("#voice option", "os => os.length") > 1, "no voices from the API"
        page.connect()
        state = page.wait_for("a completed turn", lambda s: len(s["outcomes"]) >= 1)
        heard = state["finalTranscripts"][0]
        assert word_error_rate(QUESTION, heard) <= 0.35, heard
        assert page.page.inner_text("#user-transcript") == heard
        assert state["outcomes"][0]["outcome"] == "ok", state["outcomes"]
        reply = state["assistantTexts"][0]
        assert "paris" in reply.lower(), reply
        assert reply.strip() in page.page.inner_text("#assistant-text")
        state = page.wait_for("reply audio played", lambda s: s["replySamples"] >= REPLY_S * s["replySampleRate"])
        report = state["latency"][0]
        assert report["voice_to_voice_s"] > 0, report
        bars = page.page.eval_on_selector_all("#latency-bars .bar-row", "rs => rs.map(r => r.dataset.stage || 'v2v')")
        assert {"vad_s", "stt_s", "llm_first_token_s", "tts_first_audio_s", "v2v"} <= set(bars), bars
        browser_jitter = state["browserJitterBuffer"][0]
        if transport == "webrtc":  # the browser's own jitter buffer, from getStats, as its own bar
            assert isinstance(browser_jitter, (int, float)) and browser_jitter >= 0, state["browserJitterBuffer"]
            assert "browser_jitter_buffer_s" in bars, bars
        else:
            assert browser_jitter is None and "browser_jitter_buffer_s" not in bars, (browser_jitter, bars)
        assert "voice-to-voice" in page.page.inner_text("#v2v")
        for path in page.screenshots(f"demo-{transport}"):
            assert path.stat().st_size > 10_000, path
        assert not page.overflows_horizontally(), "the page is wider than a phone screen"
        assert not page.errors and not state["errors"], (page.errors, state["errors"])
        page.connect()  # disconnect
        page.wait_for("disconnect", lambda s: s["status"] == "idle", timeout=30)
        print(f"\n{transport}: voice-to-voice {report['voice_to_voice_s']:.3f} s, report {report}")
        return state


def test_a_spoken_turn_over_websocket(main_in_netns: MainProcess, tmp_path: Path) -> None:
    state = one_turn(main_in_netns, tmp_path, "ws")
    assert state["replyFrames"] > 0 and state["replyBytes"] > 0, "no binary reply frames on the socket"


def test_a_spoken_turn_over_webrtc(main_in_netns: MainProcess, tmp_path: Path) -> None:
    state = one_turn(main_in_netns, tmp_path, "webrtc")
    assert state["rtc"].get("totalSamplesReceived", 0) > 0, state["rtc"]
    report = state["latency"][0]
    assert "transport_jitter_s" in report and "transport_resample_s" in report, report


def test_push_to_talk_sends_only_what_is_said_while_the_button_is_held(
    main_in_netns: MainProcess, tmp_path: Path
) -> None:
    # The file says the question twice: at 1 s, with the button up (the server must hear nothing),
    # and at 8 s, with the button held from 5.5 s to 12 s (the margins absorb a loaded machine).
    mic = fake_mic_wav(tmp_path / "ptt.wav", [1.0, QUESTION, 5.0, QUESTION, 120.0])
    with page_for(main_in_netns, mic, "demo_ptt") as page:
        page.open(main_in_netns.url, transport="ws", ptt="1", **NO_PROCESSING)
        assert page.page.is_visible("#talk")
        page.connect()
        page.at_mic_time(5.5)
        assert page.state()["events"].get("speech_started", 0) == 0, "speech went up with the button released"
        page.page.hover("#talk")
        page.page.mouse.down()
        page.at_mic_time(12.0)
        page.page.mouse.up()
        state = page.wait_for("a completed turn", lambda s: len(s["outcomes"]) >= 1)
        assert state["events"]["speech_started"] == 1 and len(state["finalTranscripts"]) == 1, state["events"]
        assert word_error_rate(QUESTION, state["finalTranscripts"][0]) <= 0.35, state["finalTranscripts"]
        assert state["outcomes"][0]["outcome"] == "ok"


STABLE_READINGS = 6  # the counter must read the same this many times in a row (the page is polled every 250 ms)


def reply_audio_stops(page: DemoPage, audio_starts: int) -> None:
    """After the flush the page's count of audible reply samples stops growing: it reads the same
    STABLE_READINGS times in a row before the next reply begins (another ``audio_start``). Audio still
    in the browser's jitter buffer may add a little first; an unflushed reply would keep it growing."""
    readings: list[int] = []
    for _ in range(480):
        state = page.state()
        assert state["events"].get("audio_start", 0) == audio_starts, (
            f"the next reply started before the interrupted one went quiet; audible samples read {readings}"
        )
        readings.append(state["replySamples"])
        if len(readings) >= STABLE_READINGS and len(set(readings[-STABLE_READINGS:])) == 1:
            return
        page.page.wait_for_timeout(250)
    raise AssertionError(f"the interrupted reply's audio kept reaching the page: audible samples read {readings}")


def test_speaking_over_a_webrtc_reply_interrupts_it(main_in_netns: MainProcess, tmp_path: Path) -> None:
    # The interruption comes 25 s after the question, while the storyteller's long reply plays
    # (or, on a very slow machine, while it is still being written: a barge-in all the same).
    mic = fake_mic_wav(tmp_path / "barge-in.wav", [1.0, STORY, 25.0, BARGE_IN, 120.0])
    with page_for(main_in_netns, mic, "demo_barge_in") as page:
        page.open(main_in_netns.url, transport="webrtc", agent="storyteller", **NO_PROCESSING)
        page.connect()
        state = page.wait_for("an interrupted turn", lambda s: len(s["outcomes"]) >= 1)
        first = state["outcomes"][0]
        assert first["outcome"] == "interrupted" and first["interrupted"] is True, state["outcomes"]
        assert [f["turn_id"] for f in state["flushes"]] == [first["turn_id"]], state["flushes"]
        assert state["flushes"][0]["replySamples"] > 0, "no reply audio had reached the page before the flush"
        reply_audio_stops(page, state["flushes"][0]["audioStarts"])
        assert "interrupted" in (page.page.get_attribute("#assistant-text li", "class") or "")
        assert page.page.locator("#assistant-text li s.unheard").count() == 1, "what was not heard is not marked"
        state = page.wait_for("the interruption's transcript", lambda s: len(s["finalTranscripts"]) >= 2)
        assert word_error_rate(STORY, state["finalTranscripts"][0]) <= 0.35, state["finalTranscripts"]
        assert word_error_rate(BARGE_IN, state["finalTranscripts"][1]) <= 0.35, state["finalTranscripts"]
        page.screenshots("demo-webrtc-barge-in")
        assert not page.errors and not state["errors"], (page.errors, state["errors"])
