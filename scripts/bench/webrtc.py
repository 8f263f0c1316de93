"""WebRTC voice-to-voice beside /ws/voice: the same Piper questions over both transports, one main, one run.

    .venv/bin/python scripts/bench/webrtc.py [--utterances N] [--out FILE]

Needs root and iproute2: the run happens inside a loopback-only network namespace
(tests.helpers.netns.loopback_netns), since ICE gathers candidates on every interface. It
starts its own ``main.py`` there (free ports, ``UV_VAR_DIR`` under var/bench/webrtc-run), then:

1. makes N questions spoken by Piper (main's ``/v1/audio/speech``), 16 kHz, trimmed;
2. opens one /ws/voice client (``_voice_ws``: 20 ms 16 kHz frames at real time) and one WebRTC
   client (aiortc, ``_webrtc_turns``: the same speech upsampled to 48 kHz on its microphone
   track), warms both up, then per round speaks question r on one and r+1 on the other (a
   fresh session each; the order alternates, and no LLM call follows one with the same
   question, whose cached prompt prefix would flatter it);
3. prints p50/p95 of the server's voice-to-voice (end of speech -> first reply audio handed to
   the transport) and of the client's (last speech frame out -> first reply audio in), the
   WebRTC/WebSocket ratios, and the transport's own share from the WebRTC latency reports
   (``transport_jitter_s``, ``transport_resample_s``); writes everything as JSON (``--out``).

The client-side WebRTC number includes both RTP jitter buffers (aiortc holds 4 frames, ~80 ms,
on each side), Opus and the paced track; the WebSocket client gets raw PCM with no playout
buffer, so the ratio is the price of a real-time media path, not of main's code alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from scripts.bench._voice_report import dist
from scripts.bench._voice_speech import QUESTIONS, Utterance, make_utterances
from scripts.bench._voice_stack import ROOT, MainStack
from scripts.bench._voice_ws import TurnResult, VoiceClient
from scripts.bench._webrtc_turns import reset, webrtc_turn
from scripts.bench.voice import git_commit
from tests.helpers.netns import interfaces, loopback_netns, netns_unavailable
from tests.helpers.webrtc_client import WebRtcClient

OUT_RATE = 24000
WARMUP = "Please say hello to everyone."


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = MainStack(args.var_dir)
    started = time.monotonic()
    say(f"starting main on {stack.url} in a loopback namespace (interfaces: {interfaces()}) ...")
    stack.start()
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(180, connect=10)) as http:
            await stack.wait_healthy(args.startup_timeout)
            startup_s = round(time.monotonic() - started, 1)
            voice = (await http.get(f"{stack.url}/v1/audio/voices", params={"engine": "piper"})).json()
            piper = {"piper": str(voice["default_voice"])}
            utts = await make_utterances(http, stack.url, list(QUESTIONS[: args.utterances]), piper)
            warm = (await make_utterances(http, stack.url, [WARMUP], piper))[0]
            ws, rtc = await rounds(stack, http, utts, warm, args.turn_timeout)
    except BaseException:
        traceback.print_exc()
        say(stack.log_tails(args.log_lines))
        raise
    finally:
        stack.stop()
    return report(ws, rtc, utts, startup_s, time.monotonic() - started)


async def rounds(
    stack: MainStack, http: httpx.AsyncClient, utts: list[Utterance], warm: Utterance, within_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n, ws_out, rtc_out = len(utts), [], []
    async with VoiceClient.open(stack.ws_url, OUT_RATE) as wsc, WebRtcClient.open(stack.url, http=http) as rtcc:
        say(f"warm-up ({warm.text!r}, not counted) ...")
        await wsc.turn(warm, within_s=within_s)
        await reset(rtcc)
        await webrtc_turn(rtcc, warm, within_s=within_s)
        for r in range(n):
            stack.check_alive()
            pair = [("ws", utts[r]), ("webrtc", utts[(r + 1) % n])]
            for kind, utt in pair if r % 2 == 0 else pair[::-1]:
                if kind == "ws":
                    await wsc.reset()
                    res = await wsc.turn(utt, within_s=within_s)
                    ws_out.append(res.to_dict())
                else:
                    await reset(rtcc)
                    res = await webrtc_turn(rtcc, utt, within_s=within_s)
                    rtc_out.append(_with_transport(res))
                say(f"  {r + 1:2d}/{n} {kind:6s} {utt.id:9s} v2v {_s(res.server_v2v_s)} "
                    f"(client {_s(res.client_v2v_s)}) {res.outcome or 'LOST'}; heard {res.transcript!r}")
    return ws_out, rtc_out


def _with_transport(res: TurnResult) -> dict[str, Any]:
    row = res.to_dict()
    row["transport_jitter_s"] = res.report.get("transport_jitter_s")
    row["transport_resample_s"] = res.report.get("transport_resample_s")
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def report(ws: list[dict[str, Any]], rtc: list[dict[str, Any]], utts: list[Utterance], startup_s: float,
           elapsed_s: float) -> dict[str, Any]:
    ok = {"ws": [t for t in ws if t["answered"]], "webrtc": [t for t in rtc if t["answered"]]}
    summary: dict[str, Any] = {}
    for kind, rows in ok.items():
        summary[kind] = {
            "answered": len(rows), "lost": sum(t["lost"] for t in (ws if kind == "ws" else rtc)),
            "server_v2v": dist(t["server_v2v_s"] for t in rows),
            "client_v2v": dist(t["client_v2v_s"] for t in rows),
            "wer_mean": round(sum(t["wer"] for t in rows) / len(rows), 3) if rows else None,
        }
    summary["webrtc"]["transport_jitter"] = dist(t["transport_jitter_s"] for t in ok["webrtc"])
    summary["webrtc"]["transport_resample"] = dist(t["transport_resample_s"] for t in ok["webrtc"])
    summary["ratio_webrtc_over_ws"] = {
        f"{side}_{p}": _ratio(summary["webrtc"][side][p], summary["ws"][side][p])
        for side in ("server_v2v", "client_v2v") for p in ("p50", "p95")
    }
    return {
        "summary": summary, "ws": ws, "webrtc": rtc, "utterances": [u.info() for u in utts],
        "meta": {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(), "cpus": os.cpu_count(),
                 "startup_s": startup_s, "elapsed_s": round(elapsed_s, 1), "loadavg_end": os.getloadavg(),
                 "ws_out_rate": OUT_RATE, "webrtc_out_rate": 48000,
                 "note": "shared 2-core machine: other jobs run beside the bench (see loadavg)"},
    }


def print_report(rep: dict[str, Any]) -> None:
    s = rep["summary"]
    print("\nvoice-to-voice (s)        p50      p95      n   lost  mean WER")
    for kind in ("ws", "webrtc"):
        for side in ("server_v2v", "client_v2v"):
            d = s[kind][side]
            p50, p95 = (f"{d[p]:.3f}" if d[p] is not None else "-" for p in ("p50", "p95"))
            lost, wer = s[kind]["lost"], s[kind]["wer_mean"]
            print(f"  {kind:6s} {side:12s} {p50:>8s} {p95:>8s} {d['n']:>4d} {lost:>5d}  {wer}")
    r = s["ratio_webrtc_over_ws"]
    print(f"\nWebRTC / WebSocket: server p50 {r['server_v2v_p50']}, p95 {r['server_v2v_p95']}; "
          f"client p50 {r['client_v2v_p50']}, p95 {r['client_v2v_p95']}")
    j, rs = s["webrtc"]["transport_jitter"], s["webrtc"]["transport_resample"]
    print(f"WebRTC transport share: jitter p50 {j['p50']} p95 {j['p95']} s; resample p50 {rs['p50']} p95 {rs['p95']} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--utterances", type=int, default=6, help=f"questions (1..{len(QUESTIONS)})")
    ap.add_argument("--turn-timeout", type=float, default=120.0, help="seconds for one turn to settle")
    ap.add_argument("--startup-timeout", type=float, default=900.0, help="seconds for main to become healthy")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "webrtc.json")
    ap.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench" / "webrtc-run",
                    help="main's UV_VAR_DIR (wiped at start)")
    ap.add_argument("--log-lines", type=int, default=60, help="lines of each log printed on failure")
    args = ap.parse_args(argv)
    if not 1 <= args.utterances <= len(QUESTIONS):
        ap.error(f"--utterances takes 1..{len(QUESTIONS)}, got {args.utterances}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if why := netns_unavailable():
        say(f"the WebRTC benchmark runs in a loopback-only network namespace: {why}")
        raise SystemExit(2)
    with loopback_netns("uvbench"):  # main and both clients live in it; nothing else is reachable
        try:
            rep = asyncio.run(run(args))
        except Exception as e:
            say(f"\nWebRTC benchmark FAILED: {type(e).__name__}: {e}")
            raise SystemExit(1) from e
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2))
    print_report(rep)
    print(f"\nwrote {args.out}")
    if rep["summary"]["ws"]["lost"] or rep["summary"]["webrtc"]["lost"]:
        say("WebRTC benchmark: turns were lost (see the JSON)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
