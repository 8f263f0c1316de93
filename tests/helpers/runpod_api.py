"""A RunPod serverless endpoint as production serves it, around the real worker handler: for tests.

The runpod SDK's local API server (``--rp_serve_api``) is not production: POST only, no
``/{endpoint_id}`` prefix, ``/run`` waits for ``/status`` or ``/stream`` to run the job, the
stream arrives whole, and there is no ``/cancel`` or ``/health``. This server follows RunPod's
documented operation reference instead, so the hub's RunPod transport can be tested on every
path it uses in production, with the same handler (``services.runtime.runpod_worker``) and the
real model:

- ``POST /v2/{endpoint}/run`` queues a job (``IN_QUEUE``) that a worker task picks up;
- ``POST /v2/{endpoint}/runsync?wait=MS`` waits up to ``wait`` for the result, else returns the
  job still ``IN_QUEUE`` or ``IN_PROGRESS``;
- ``GET /v2/{endpoint}/status/{id}``: ``{"id", "status", "output" | "error", "delayTime", "executionTime"}``;
- ``GET /v2/{endpoint}/stream/{id}``: ``{"status", "stream": [{"output": chunk}, ...]}`` with the
  chunks made since the previous call;
- ``POST /v2/{endpoint}/cancel/{id}`` cancels a queued or running job (``CANCELLED``);
- ``GET /v2/{endpoint}/health``: ``{"jobs": {...}, "workers": {"idle", "running", ...}}``;
- ``Authorization: Bearer <key>`` is required (401 otherwise); an unknown endpoint id is 404;
- ``policy.executionTimeout`` (ms) ends a job as ``TIMED_OUT``; a handler's ``{"error": ...}``
  chunk makes the job ``FAILED`` with that error, as the production worker loop does.

``--cold-start-s N`` keeps every worker "initializing" for N seconds after start (``/health``
shows no ready worker, jobs wait ``IN_QUEUE``), as a scaled-to-zero endpoint does.
``--chunk-delay-s S`` pauses S seconds after each output chunk, as a slow worker or network
would, so a job is reliably still IN_PROGRESS when a test cancels it.

Run with a ``<role>-runpod`` venv's Python:
``python tests/helpers/runpod_api.py stt --port 8000 --api-key KEY [--endpoint-id ep-stt]``.
``GET /ping`` and ``GET /stats`` (not RunPod routes) answer once the model is loaded; ``/stats``
counts cancelled jobs and lists the last jobs' queueing and execution times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    timeout_s: float | None
    status: str = "IN_QUEUE"
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    output: list[Any] = field(default_factory=list)
    unread: deque[Any] = field(default_factory=deque)
    error: Any = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        now = time.monotonic()
        out["delayTime"] = int(((self.started or now) - self.submitted) * 1000)
        if self.started is not None:
            out["executionTime"] = int(((self.finished or now) - self.started) * 1000)
        if self.status == "COMPLETED":
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        return out


class Endpoint:
    """Jobs, a queue and ``workers`` worker tasks running the handler."""

    def __init__(self, handler: Any, workers: int, cold_start_s: float, chunk_delay_s: float = 0.0) -> None:
        self.handler, self.jobs, self.queue = handler, {}, asyncio.Queue()  # type: ignore[var-annotated]
        self.jobs: dict[str, Job]
        self.ready_at = time.monotonic() + cold_start_s
        self.chunk_delay_s = chunk_delay_s
        self.busy = 0
        self.workers = workers
        self.counts = {"completed": 0, "failed": 0, "retried": 0}
        self.cancelled = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)

    def start(self) -> None:
        for _ in range(self.workers):
            asyncio.get_running_loop().create_task(self._work())

    def submit(self, body: dict[str, Any]) -> Job:
        policy = body.get("policy") or {}
        timeout_ms = policy.get("executionTimeout")
        job = Job(f"{uuid.uuid4()}-u1", body["input"], timeout_ms / 1000 if timeout_ms else None)
        self.jobs[job.id] = job
        self.queue.put_nowait(job)
        return job

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            wait = self.ready_at - time.monotonic()
            if wait > 0:  # a cold start: the worker is still loading
                await asyncio.sleep(wait)
            if job.status != "IN_QUEUE":  # cancelled while queued
                continue
            job.status, job.started = "IN_PROGRESS", time.monotonic()
            job.changed.set()
            self.busy += 1
            job.task = asyncio.current_task()
            try:
                await asyncio.wait_for(self._run(job), job.timeout_s)
            except TimeoutError:
                job.status = "TIMED_OUT"
            except asyncio.CancelledError:
                job.status = "CANCELLED"
                # this worker task was cancelled with its job: start a fresh one in its place
                asyncio.get_running_loop().create_task(self._work())
                self._finish(job)
                self.busy -= 1
                return
            self.busy -= 1
            self._finish(job)

    async def _run(self, job: Job) -> None:
        gen = self.handler({"id": job.id, "input": job.input})
        try:
            async for chunk in gen:
                if isinstance(chunk, dict) and "error" in chunk:  # production: an error chunk fails the job
                    job.status, job.error = "FAILED", chunk["error"]
                    return
                job.output.append(chunk)
                job.unread.append(chunk)
                job.changed.set()
                if self.chunk_delay_s:  # a slow worker (or network): the job stays IN_PROGRESS meanwhile
                    await asyncio.sleep(self.chunk_delay_s)
        finally:
            await gen.aclose()
        job.status = "COMPLETED"

    def _finish(self, job: Job) -> None:
        job.finished = time.monotonic()
        self.recent.append({"op": job.input.get("op"), "status": job.status, **{
            k: v for k, v in job.view().items() if k in ("delayTime", "executionTime")}})
        if job.status == "COMPLETED":
            self.counts["completed"] += 1
        elif job.status in ("FAILED", "TIMED_OUT"):
            self.counts["failed"] += 1
        elif job.status == "CANCELLED":
            self.cancelled += 1
        job.done.set()
        job.changed.set()

    def cancel(self, job: Job) -> None:
        if job.status in TERMINAL:
            return
        if job.task is not None and job.status == "IN_PROGRESS":
            job.task.cancel()
        else:
            job.status = "CANCELLED"
            self._finish(job)

    def health(self) -> dict[str, Any]:
        cold = time.monotonic() < self.ready_at
        queued = sum(1 for j in self.jobs.values() if j.status == "IN_QUEUE")
        return {
            "jobs": {**self.counts, "inProgress": self.busy, "inQueue": queued},
            "workers": {"idle": 0 if cold else self.workers - self.busy, "running": 0 if cold else self.busy,
                        "initializing": self.workers if cold else 0, "ready": 0 if cold else self.workers,
                        "throttled": 0, "unhealthy": 0},
        }


def build_app(ep: Endpoint, endpoint_id: str, api_key: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ep.start()
        yield

    app = FastAPI(title="RunPod production API (test double around the real handler)", lifespan=lifespan)

    def refuse(request: Request, eid: str) -> JSONResponse | None:
        if request.headers.get("authorization", "") != f"Bearer {api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if eid != endpoint_id:
            return JSONResponse({"error": f"endpoint {eid} not found"}, status_code=404)
        return None

    def job_of(request: Request, eid: str, jid: str) -> Job | JSONResponse:
        """The job a /status, /stream or /cancel names, or the refusal (401, 404) to send."""
        if (r := refuse(request, eid)) is not None:
            return r
        job = ep.jobs.get(jid)
        return job if job is not None else JSONResponse({"error": "job not found"}, status_code=404)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "ready"}

    @app.get("/stats")  # not a RunPod route: what tests check after a barge-in
    async def stats() -> dict[str, Any]:
        return {"cancelled": ep.cancelled, "jobs": len(ep.jobs), "recent": list(ep.recent), **ep.health()["jobs"]}

    async def submitted(request: Request, eid: str) -> Job | JSONResponse:
        """The job a /run or /runsync body asks for, queued; or the refusal (401, 404, 400) to send."""
        if (r := refuse(request, eid)) is not None:
            return r
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return JSONResponse({"error": 'the body must be {"input": {...}}'}, status_code=400)
        return ep.submit(body)

    @app.post("/v2/{eid}/run")
    async def run(eid: str, request: Request) -> Any:
        job = await submitted(request, eid)
        return job if isinstance(job, JSONResponse) else {"id": job.id, "status": job.status}

    @app.post("/v2/{eid}/runsync")
    async def runsync(eid: str, request: Request, wait: int = 90_000) -> Any:
        job = await submitted(request, eid)
        if isinstance(job, JSONResponse):
            return job
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), max(1, min(wait, 300_000)) / 1000)
        return job.view()

    @app.get("/v2/{eid}/status/{jid}")
    async def status(eid: str, jid: str, request: Request) -> Any:
        job = job_of(request, eid, jid)
        return job if isinstance(job, JSONResponse) else job.view()

    @app.get("/v2/{eid}/stream/{jid}")
    async def stream(eid: str, jid: str, request: Request) -> Any:
        job = job_of(request, eid, jid)
        if isinstance(job, JSONResponse):
            return job
        if not job.unread and job.status not in TERMINAL:  # a short long-poll, as production does
            job.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), 1.0)
        chunks = [{"output": job.unread.popleft()} for _ in range(len(job.unread))]
        out: dict[str, Any] = {"status": job.status, "stream": chunks}
        if job.error is not None:
            out["error"] = job.error
        return out

    @app.post("/v2/{eid}/cancel/{jid}")
    async def cancel(eid: str, jid: str, request: Request) -> Any:
        job = job_of(request, eid, jid)
        if isinstance(job, JSONResponse):
            return job
        ep.cancel(job)
        await asyncio.sleep(0)
        return {"id": job.id, "status": "CANCELLED" if job.status not in ("COMPLETED", "FAILED") else job.status}

    @app.get("/v2/{eid}/health")
    async def health(eid: str, request: Request) -> Any:
        if (r := refuse(request, eid)) is not None:
            return r
        return ep.health()

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", choices=["stt", "tts", "llm"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--endpoint-id", default=None, help="default: ep-<role>")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cold-start-s", type=float, default=0.0)
    p.add_argument("--chunk-delay-s", type=float, default=0.0, help="pause after each output chunk (a slow worker)")
    args = p.parse_args()
    from services.runtime.logs import configure_logging
    from services.runtime.runpod_worker import build_worker

    configure_logging(args.role, "INFO")
    worker = build_worker(args.role)
    worker.load()
    ep = Endpoint(worker.handle, args.workers, args.cold_start_s, args.chunk_delay_s)
    app = build_app(ep, args.endpoint_id or f"ep-{args.role}", args.api_key)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
