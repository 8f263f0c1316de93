"""Hub benchmark: Control.Echo latency per protocol against the raw-TCP floor, and the hub's own overhead.

    .venv/bin/python scripts/bench/hub.py --self-serve
    .venv/bin/python scripts/bench/hub.py --grpc 127.0.0.1:50051 --http http://127.0.0.1:8001 \
        --token TOKEN --role stt

For each payload size (100 B, 32 KB, 240 KB by default) it measures the median and p99 of:

* the floor: a length-prefixed echo over a plain asyncio TCP connection on loopback;
* every protocol (gRPC, HTTP+msgpack, HTTP+JSON) through ``CommunicationManager.call`` (forced);
* the same calls made directly, with a bare ``grpc.aio`` channel or a bare ``httpx`` client,
  interleaved call by call with the hub's so both see the same machine state. The hub's
  overhead is the difference of the two medians;
* the hub's pure in-process cost: ``call`` over an in-memory transport vs that transport alone;
* streams: Control.EchoRepeat (100 x 4 KB by default) through ``hub.stream()`` per protocol, time
  to the first message and to the end (``_stream_rows.py``; ``--stream-count 0`` skips them).

The servers (the floor always; with ``--self-serve`` the gRPC and HTTP echo servers too) run in a
subprocess (scripts/bench/_echo_servers.py), as a real service would. It prints a table with the
ratios and the issue's targets, and writes everything as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from google.protobuf.message import Message

from core.config import load_settings
from core.config.models import HubConfig
from core.context import GlobalContext, ProcessContext
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager, UnaryCall
from core.wire import CONTROL_OPS, from_json, from_msgpack, to_json, to_msgpack
from scripts.bench._echo_servers import TcpEchoClient  # the repo root is on sys.path (editable install)
from scripts.bench._stream_rows import print_stream_rows, stream_rows

ROOT = Path(__file__).resolve().parents[2]
ECHO_SERVERS = Path(__file__).resolve().with_name("_echo_servers.py")
ECHO = CONTROL_OPS["Echo"]
PROTOCOLS = ("grpc", "msgpack", "json")
TARGETS = {"grpc_x_floor": 12.0, "msgpack_x_floor": 30.0, "p99_x_median": 2.0, "hub_overhead_ms": 0.2}

Timed = Callable[[], Awaitable[Any]]


@dataclass
class Series:
    """Latencies of one kind of call, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        xs = sorted(self.samples)
        return xs[max(0, math.ceil(0.99 * len(xs)) - 1)]

    def to_dict(self) -> dict[str, float]:
        return {
            "median_ms": self.median * 1e3,
            "p99_ms": self.p99 * 1e3,
            "n": len(self.samples),
            "mean_ms": statistics.fmean(self.samples) * 1e3,
            "min_ms": min(self.samples) * 1e3,
        }


async def measure(fns: list[Timed], iterations: int, warmup: int) -> list[Series]:
    """Run the callables interleaved (ABBA order): ``warmup`` untimed rounds, then ``iterations`` timed."""
    for _ in range(warmup):
        for fn in fns:
            await fn()
    gc.collect()
    out: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    order = list(enumerate(fns))
    for _ in range(iterations):
        order.reverse()  # ABBA: neither kind always runs first, right after the other
        for i, fn in order:
            t0 = clock()
            await fn()
            out[i].append(clock() - t0)
    return [Series(s) for s in out]


class StaticResolver:
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def endpoint(self, service: str) -> Endpoint:
        return self.ep


class NullTransport:
    """Answers at once from memory: what is left of a call is the hub's own work."""

    def __init__(self) -> None:
        self.response = ECHO.response(payload=b"x")

    async def unary(self, call: UnaryCall) -> Message:
        return self.response

    async def close(self) -> None:
        return None


class DirectClients:
    """The same Echo calls without the hub: a bare grpc.aio channel and a bare httpx client."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.channel = grpc.aio.insecure_channel(ep.grpc_target)
        self.echo = self.channel.unary_unary(
            ECHO.grpc_path,
            request_serializer=ECHO.request.SerializeToString,
            response_deserializer=ECHO.response.FromString,
        )
        self.http = httpx.AsyncClient(trust_env=False, timeout=30.0)
        self.metadata = (("x-internal-token", ep.token), ("x-request-id", "bench"))
        self.url = ep.http_base + ECHO.http_path

    async def grpc(self, req: Message) -> Message:
        resp: Message = await self.echo(req, timeout=30.0, metadata=self.metadata)
        return resp

    async def _post(self, body: bytes, ctype: str) -> bytes:
        r = await self.http.post(
            self.url,
            content=body,
            headers={
                "content-type": ctype,
                "accept": ctype,
                "x-internal-token": self.ep.token,
                "x-request-id": "bench",
            },
        )
        r.raise_for_status()
        return r.content

    async def msgpack(self, req: Message) -> Message:
        return from_msgpack(ECHO.response, await self._post(to_msgpack(req), "application/msgpack"))

    async def json(self, req: Message) -> Message:
        return from_json(ECHO.response, await self._post(to_json(req), "application/json"))

    async def close(self) -> None:
        await self.channel.close()
        await self.http.aclose()


async def spawn_servers(token: str, only: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ECHO_SERVERS),
        "--token",
        token,
        "--only",
        only,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
    if not line:
        raise SystemExit(f"the echo servers exited (code {await proc.wait()}) before printing their ports")
    return proc, json.loads(line)


async def stop_servers(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 5.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def size_label(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n // 1024} KB"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    token = args.token or secrets.token_urlsafe(16)
    procs: list[asyncio.subprocess.Process] = []
    if args.self_serve:
        proc, ports = await spawn_servers(token, "grpc,http,tcp")
        procs.append(proc)
        ep = Endpoint("bench", args.role, "127.0.0.1", ports["grpc_port"], ports["http_port"], token)
        tcp_port = ports["tcp_port"]
    else:
        host, _, gport = args.grpc.rpartition(":")
        http = urlsplit(args.http)
        if http.hostname != host:
            raise SystemExit(f"--grpc host {host!r} and --http host {http.hostname!r} must be the same host")
        ep = Endpoint("bench", args.role, host, int(gport), http.port or 80, token)
        proc, ports = await spawn_servers(token, "tcp")
        procs.append(proc)
        tcp_port = ports["tcp_port"]

    settings = load_settings()
    hub = CommunicationManager(
        ProcessContext(GlobalContext.create(settings), "bench"),
        StaticResolver(ep),
        config=HubConfig(default_deadline_s=30.0),
    )
    direct = DirectClients(ep)
    tcp = await TcpEchoClient.connect("127.0.0.1", tcp_port)
    results: list[dict[str, Any]] = []
    try:
        for size in args.sizes:
            payload = os.urandom(size)
            req = ECHO.request(payload=payload)
            (floor,) = await measure([partial(tcp.echo, payload)], args.iterations, args.warmup)
            results.append({"size": size, "protocol": "tcp", "path": "floor", **floor.to_dict()})
            print(f"  {size_label(size):>6} floor   {floor.median * 1e3:7.3f} ms", file=sys.stderr)
            for protocol in PROTOCOLS:
                bare = getattr(direct, protocol)
                direct_s, hub_s = await measure(
                    [
                        partial(bare, req),
                        partial(hub.call, "bench", "Echo", req, protocol=protocol),
                    ],
                    args.iterations,
                    args.warmup,
                )
                results.append({"size": size, "protocol": protocol, "path": "direct", **direct_s.to_dict()})
                results.append({"size": size, "protocol": protocol, "path": "hub", **hub_s.to_dict()})
                print(
                    f"  {size_label(size):>6} {protocol:<7} {hub_s.median * 1e3:7.3f} ms "
                    f"(direct {direct_s.median * 1e3:.3f} ms)",
                    file=sys.stderr,
                )
        null = await null_overhead(args.iterations * 4, args.warmup)
        streams = []
        if args.stream_count:
            streams = await stream_rows(hub, "bench", count=args.stream_count, size=args.stream_size,
                                        iterations=max(10, args.iterations // 10), warmup=max(2, args.warmup // 10))
    finally:
        await tcp.close()
        await direct.close()
        await hub.close()
        for p in procs:
            await stop_servers(p)
    rep = report(args, ep, results, null)
    rep["streams"] = streams
    return rep


async def null_overhead(iterations: int, warmup: int) -> dict[str, float]:
    """The hub's in-process cost per call: call() over an in-memory transport vs that transport alone."""
    t = NullTransport()
    ep = Endpoint("null", "stt", "127.0.0.1", 1, 2, "t")
    hub = CommunicationManager(
        ProcessContext(GlobalContext.create(load_settings()), "bench-null"),
        StaticResolver(ep),
        config=HubConfig(),
        transports={"grpc": t},
    )
    req = ECHO.request(payload=b"x")
    loop = asyncio.get_running_loop()
    call = UnaryCall(ep, ECHO, req, loop.time() + 3600, (), 0.5)
    bare, through = await measure(
        [partial(t.unary, call), partial(hub.call, "null", "Echo", req)], iterations, warmup
    )
    await hub.close()
    return {
        "transport_alone_us": bare.median * 1e6,
        "through_hub_us": through.median * 1e6,
        "overhead_us": (through.median - bare.median) * 1e6,
        "through_hub_p99_us": through.p99 * 1e6,
    }


def report(
    args: argparse.Namespace, ep: Endpoint, results: list[dict[str, Any]], null: dict[str, float]
) -> dict[str, Any]:
    def get(size: int, protocol: str, path: str) -> dict[str, Any]:
        return next(r for r in results if (r["size"], r["protocol"], r["path"]) == (size, protocol, path))

    rows, checks = [], []
    for size in args.sizes:
        floor = get(size, "tcp", "floor")
        rows.append(
            {
                "size": size,
                "protocol": "tcp floor",
                "median_ms": floor["median_ms"],
                "p99_ms": floor["p99_ms"],
                "p99_x_median": floor["p99_ms"] / floor["median_ms"],
                "x_floor": 1.0,
            }
        )
        for protocol in PROTOCOLS:
            h, d = get(size, protocol, "hub"), get(size, protocol, "direct")
            row = {
                "size": size,
                "protocol": protocol,
                "median_ms": h["median_ms"],
                "p99_ms": h["p99_ms"],
                "p99_x_median": h["p99_ms"] / h["median_ms"],
                "x_floor": h["median_ms"] / floor["median_ms"],
                "direct_median_ms": d["median_ms"],
                "hub_overhead_ms": h["median_ms"] - d["median_ms"],
            }
            rows.append(row)
            where = f"{protocol} {size_label(size)}"
            if protocol in ("grpc", "msgpack"):
                key = f"{protocol}_x_floor"
                checks.append({"check": key, "where": where, "value": row["x_floor"], "target": TARGETS[key]})
            checks.append(
                {
                    "check": "p99_x_median",
                    "where": where,
                    "value": row["p99_x_median"],
                    "target": TARGETS["p99_x_median"],
                }
            )
            checks.append(
                {
                    "check": "hub_overhead_ms",
                    "where": where,
                    "value": row["hub_overhead_ms"],
                    "target": TARGETS["hub_overhead_ms"],
                }
            )
    for c in checks:
        c["ok"] = c["value"] <= c["target"]
    return {
        "meta": {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": "self-serve" if args.self_serve else "service",
            "target": {"grpc": ep.grpc_target, "http": ep.http_base, "role": ep.role},
            "iterations": args.iterations,
            "warmup": args.warmup,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
            "grpcio": grpc.__version__,
            "httpx": httpx.__version__,
        },
        "rows": rows,
        "raw": results,
        "null_transport": null,
        "checks": checks,
        "targets": TARGETS,
    }


def print_table(rep: dict[str, Any]) -> None:
    m = rep["meta"]
    print(
        f"\nHub benchmark: Control.Echo, {m['mode']} ({m['target']['grpc']}, {m['target']['http']}), "
        f"{m['iterations']} calls per series after {m['warmup']} warmup, "
        f"{m['cpus']} CPUs (load {m['loadavg_1m']:.1f}), Python {m['python']}"
    )
    head = (
        f"{'size':>6}  {'protocol':<9} {'median ms':>9} {'p99 ms':>8} {'p99/med':>7} {'x floor':>7} "
        f"{'direct ms':>9} {'hub +ms':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rep["rows"]:
        extra = (
            f" {r['direct_median_ms']:9.3f} {r['hub_overhead_ms']:+8.3f}" if "direct_median_ms" in r else ""
        )
        print(
            f"{size_label(r['size']):>6}  {r['protocol']:<9} {r['median_ms']:9.3f} {r['p99_ms']:8.3f} "
            f"{r['p99_x_median']:7.2f} {r['x_floor']:7.1f}{extra}"
        )
    n = rep["null_transport"]
    print(
        f"\nhub in-process cost (in-memory transport): {n['overhead_us']:.1f} us/call median "
        f"({n['through_hub_us']:.1f} us through the hub vs {n['transport_alone_us']:.1f} us alone; "
        f"p99 {n['through_hub_p99_us']:.1f} us)"
    )
    print("\ntargets:")
    for key, target in rep["targets"].items():
        cs = [c for c in rep["checks"] if c["check"] == key]
        misses = [c for c in cs if not c["ok"]]
        worst = max(cs, key=lambda c: c["value"])
        status = "OK  " if not misses else f"MISS {len(misses)}/{len(cs)}"
        print(
            f"  {key:<16} <= {target:<5g} {status:<9} worst {worst['value']:.3f} ({worst['where']})"
            + (f"; misses: {', '.join(c['where'] for c in misses)}" if misses else "")
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--self-serve", action="store_true", help="start in-process-style echo servers in a subprocess"
    )
    ap.add_argument("--grpc", help="HOST:PORT of a running service's gRPC port")
    ap.add_argument("--http", help="base URL of the same service's HTTP port, e.g. http://127.0.0.1:8001")
    ap.add_argument("--token", default="", help="the service's internal token (self-serve makes one)")
    ap.add_argument("--role", default="stt", help="the service's role (Control.Echo exists on every role)")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 32 * 1024, 240 * 1024]
    )
    ap.add_argument("--stream-count", type=int, default=100, help="messages per EchoRepeat stream (0: skip)")
    ap.add_argument("--stream-size", type=int, default=4096, help="bytes per streamed message")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "hub.json")
    args = ap.parse_args(argv)
    if not args.self_serve and not (args.grpc and args.http and args.token):
        ap.error("give --self-serve, or --grpc, --http and --token of a running service")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rep = asyncio.run(run(args))
    print_table(rep)
    print_stream_rows(rep.get("streams", []))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
