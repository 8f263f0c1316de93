"""Load levels of the voice benchmark, and a sampler of the machine's load average during the run.

A level is N WebSocket sessions at once, each a real-time microphone speaking ``turns``
utterances one after another (a fresh session between them), with start offsets spread over
the first second so the utterances overlap the way concurrent users' do. Each turn ends
answered, rejected (admission control's ``UNAVAILABLE``) or LOST (neither within the timeout).
Spoken turns reach admission one by one (the STT finals come out of one Whisper decoder), so a
typed burst (N sockets sending a ``text`` turn at the same instant) checks what happens above
admission's capacity: every turn answered or explicitly rejected within 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Sequence
from typing import Any

from scripts.bench._voice_speech import Utterance
from scripts.bench._voice_ws import TurnResult, VoiceClient


async def session(url: str, out_rate: int, utterances: Sequence[Utterance], *, delay_s: float,
                  within_s: float, turn: dict[str, Any] | None = None) -> list[TurnResult]:
    await asyncio.sleep(delay_s)
    results = []
    async with VoiceClient.open(url, out_rate, turn=turn) as client:
        for i, utt in enumerate(utterances):
            if i:
                await client.reset()
            results.append(await client.turn(utt, lead_s=0.3, within_s=within_s))
    return results


async def run_level(url: str, out_rate: int, pool: Sequence[Utterance], sessions: int, turns: int, *,
                    within_s: float, seed: int, turn: dict[str, Any] | None = None) -> list[TurnResult]:
    """``sessions`` concurrent sessions of ``turns`` turns each; utterances taken round-robin from ``pool``."""
    rng = random.Random(seed)
    plans = [[pool[(s * turns + k) % len(pool)] for k in range(turns)] for s in range(sessions)]
    done = await asyncio.gather(*(
        session(url, out_rate, plan, delay_s=rng.uniform(0, 1.0), within_s=within_s, turn=turn) for plan in plans
    ))
    return [t for per_session in done for t in per_session]


async def typed_burst(url: str, out_rate: int, texts: Sequence[str], sessions: int, *,
                      within_s: float) -> list[TurnResult]:
    """``sessions`` sockets send one typed turn each at the same instant: more turns than admission holds."""
    async with contextlib.AsyncExitStack() as stack:
        clients = await asyncio.gather(*(
            stack.enter_async_context(VoiceClient.open(url, out_rate)) for _ in range(sessions)
        ))
        return list(await asyncio.gather(*(
            c.typed(texts[i % len(texts)], within_s=within_s) for i, c in enumerate(clients)
        )))


class LoadSampler:
    """Samples ``os.getloadavg()`` every ``period_s`` while the bench runs (the machine is shared)."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float, float, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._t0, 1), *os.getloadavg()))
            await asyncio.sleep(self.period_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        ones = [s[1] for s in self.samples] or [os.getloadavg()[0]]
        return {"mean_1m": round(sum(ones) / len(ones), 2), "max_1m": round(max(ones), 2),
                "min_1m": round(min(ones), 2), "period_s": self.period_s, "samples": self.samples}
