"""Voice-to-voice of CPU profiles side by side: the same spoken questions on each, one run.

    .venv/bin/python scripts/bench/profiles.py [--profiles local-pc,local-fast] [--utterances N] [--out FILE]

Starts one ``main.py`` per profile (``PROFILE=<name>``, free ports, its own var dir under
var/bench/profiles-run), makes N questions spoken by Piper, then per utterance one ``/ws/voice``
turn on each main in a fresh session with Piper's voice (the order rotates). Prints p50/p95 of
each stage and of voice-to-voice per profile, the ratios against the first profile, and writes
JSON (``--out``). This is the number behind "pick local-fast on a weak CPU" in docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from scripts.bench._side_by_side import print_table, say, side_by_side, summary
from scripts.bench._voice_stack import ROOT, MainStack


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", default="local-pc,local-fast", help="comma-separated; the first is the baseline")
    p.add_argument("--utterances", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "profiles.json")
    args = p.parse_args(argv)
    names = [n for n in args.profiles.split(",") if n]
    stacks = {}
    for name in names:
        stacks[name] = MainStack(ROOT / "var" / "bench" / "profiles-run" / name)
        stacks[name].env["PROFILE"] = name
    results = asyncio.run(side_by_side(stacks, args.utterances))
    out = {"profiles": names, "results": results, "summary": summary(results), "load_avg": os.getloadavg()}
    print_table(out["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    say(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
