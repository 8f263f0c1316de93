"""Two or more mains on the same spoken questions, one run: the shared part of the profile benches.

Each main is a :class:`MainStack` (its own var dir, port and service ports). :func:`side_by_side`
starts them, makes the Piper questions on the first, then per utterance runs one ``/ws/voice``
turn on every main in a fresh session with Piper's voice, rotating which goes first so
background load hits all alike, and returns each turn's stages and client voice-to-voice.
:func:`summary` and :func:`print_table` give p50/p95 per main and the ratios against the first.
"""

from __future__ import annotations

import traceback
from typing import Any

import httpx

from scripts.bench._voice_report import dist
from scripts.bench._voice_speech import QUESTIONS, make_utterances
from scripts.bench._voice_stack import MainStack
from scripts.bench._voice_ws import VoiceClient

OUT_RATE = 24000
VOICE = "en_US-joe-medium"
STAGES = ("stt_s", "llm_first_token_s", "first_chunk_s", "tts_first_audio_s", "voice_to_voice_s")


def say(msg: str) -> None:
    print(msg, flush=True)


async def side_by_side(stacks: dict[str, MainStack], utterances: int) -> dict[str, list[dict[str, Any]]]:
    """Start every main, then one turn per utterance on each; stops them all at the end."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in stacks}
    try:
        for s in stacks.values():
            s.start()
        for s in stacks.values():
            await s.wait_healthy(1800)
        say(f"{len(stacks)} mains are up; making the speech")
        first = next(iter(stacks.values()))
        async with httpx.AsyncClient(timeout=120) as http:
            utts = await make_utterances(http, first.url, list(QUESTIONS[:utterances]), {"piper": VOICE})
        names = list(stacks)
        for i, utt in enumerate(utts):
            for name in names[i % len(names):] + names[: i % len(names)]:
                async with VoiceClient.open(stacks[name].ws_url, OUT_RATE, voice=VOICE) as c:
                    res = await c.turn(utt)
                row = {"utterance": utt.id, "outcome": res.outcome, "client_v2v_s": res.client_v2v_s,
                       "audio_s": res.audio_s, **{k: res.report.get(k) for k in STAGES}}
                results[name].append(row)
                say(f"{name:<11} {utt.id}: v2v {row['voice_to_voice_s']} s, stt {row['stt_s']} s, "
                    f"tts first audio {row['tts_first_audio_s']} s ({res.outcome})")
    except Exception:
        traceback.print_exc()
        for s in stacks.values():
            print(s.log_tails(40))
        raise
    finally:
        for s in stacks.values():
            s.stop()
    return results


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: {k: dist(r.get(k) for r in rows if r["outcome"] == "ok") for k in (*STAGES, "client_v2v_s")}
            for name, rows in results.items()}


def print_table(s: dict[str, dict[str, Any]]) -> None:
    names = list(s)
    say("\nvoice-to-voice and stages, seconds (p50 / p95), ok turns only; ratios are p50 against " + names[0])
    say(f"{'stage':<20}" + "".join(f"{n:>22}" for n in names) + "".join(f"{'x ' + n:>14}" for n in names[1:]))
    for k in (*STAGES, "client_v2v_s"):
        cells = "".join(f"{s[n][k]['p50']!s:>11} / {s[n][k]['p95']!s:<8}" for n in names)
        base = s[names[0]][k]["p50"]
        ratios = "".join(
            f"{(s[n][k]['p50'] / base if base and s[n][k]['p50'] else float('nan')):>14.2f}" for n in names[1:])
        say(f"{k:<20}{cells}{ratios}")
