"""The hub benchmark's streaming rows: Control.EchoRepeat through ``CommunicationManager.stream``.

Per protocol (forced), one stream of ``count`` copies of a ``size``-byte payload, repeated
``iterations`` times after ``warmup``: the time to the first message and to the end of the
stream, median and p99, interleaved protocol by protocol so they share the machine's state.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from typing import Any

from core.managers.hub import CommunicationManager

PROTOCOLS = ("grpc", "msgpack", "json")


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, -(-99 * len(s) // 100) - 1)]


async def _one(hub: CommunicationManager, service: str, req: dict[str, Any], protocol: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = 0.0
    n = 0
    async for _ in hub.stream(service, "EchoRepeat", req, protocol=protocol):
        if not n:
            first = time.perf_counter() - t0
        n += 1
    if n != req["count"]:
        raise RuntimeError(f"EchoRepeat over {protocol} gave {n} messages, not {req['count']}")
    return first, time.perf_counter() - t0


async def stream_rows(
    hub: CommunicationManager, service: str, *, count: int, size: int, iterations: int, warmup: int
) -> list[dict[str, Any]]:
    req = {"payload": os.urandom(size), "count": count}
    for _ in range(warmup):
        for p in PROTOCOLS:
            await _one(hub, service, req, p)
    gc.collect()
    first: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    total: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    order = list(PROTOCOLS)
    for _ in range(iterations):
        order.reverse()
        for p in order:
            f, t = await _one(hub, service, req, p)
            first[p].append(f)
            total[p].append(t)
    rows = []
    for p in PROTOCOLS:
        row: dict[str, Any] = {
            "protocol": p, "count": count, "size": size, "n": iterations,
            "first_median_ms": statistics.median(first[p]) * 1e3, "first_p99_ms": _p99(first[p]) * 1e3,
            "total_median_ms": statistics.median(total[p]) * 1e3, "total_p99_ms": _p99(total[p]) * 1e3,
        }
        row["mb_per_s"] = count * size / (row["total_median_ms"] / 1e3) / 1e6
        rows.append(row)
        print(f"  stream {p:<7} first {row['first_median_ms']:.3f} ms, total {row['total_median_ms']:.3f} ms",
              file=sys.stderr)
    return rows


def print_stream_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\nstreams: EchoRepeat {r0['count']} x {r0['size'] // 1024} KB through hub.stream(), {r0['n']} streams each")
    head = f"{'protocol':<9} {'first ms':>9} {'p99':>8} {'total ms':>9} {'p99':>8} {'MB/s':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['protocol']:<9} {r['first_median_ms']:9.3f} {r['first_p99_ms']:8.3f} "
              f"{r['total_median_ms']:9.3f} {r['total_p99_ms']:8.3f} {r['mb_per_s']:7.1f}")
