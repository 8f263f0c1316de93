"""RunPod serverless transport: one operation as one RunPod job, over RunPod's JSON job API.

Production (``https://api.runpod.ai/v2/{endpoint_id}``, ``Authorization: Bearer <key>``):

- unary operations: ``POST /runsync?wait=MS``; a job that is still IN_QUEUE or IN_PROGRESS
  when ``/runsync`` returns is polled with ``GET /status/{id}``;
- streaming operations: ``POST /run``, then ``GET /stream/{id}`` every ``poll_interval_s``, each
  reply carrying the chunks made since the previous one;
- ``POST /cancel/{id}`` when the caller gives up: a stream closed early (a barge-in), the
  deadline, or a job stuck IN_QUEUE past ``queue_timeout_s`` (a cold start that takes too long);
- ``GET /health``: workers (idle, running...) and jobs (in queue, in progress), for the
  endpoint's state in main (``core.managers.remote``).

The job input is the same for every operation: ``{"op": "Transcribe", "body": <proto3 JSON of
the request>, "meta": {request/session/turn ids}}``. RunPod's API is JSON only, so bytes (audio)
travel base64: 4/3 of their size plus the JSON around them. The worker
(``services.runtime.runpod_worker``) yields ``{"message": <proto3 JSON>}`` per response message,
or one ``{"error": {"code", "message"}}``; a handler that crashed makes the job FAILED, and the
error text is mapped to the same ``core.errors`` classes as on the other transports.

Job states: IN_QUEUE and IN_PROGRESS keep polling; COMPLETED ends the call; FAILED is the
worker's error; CANCELLED and TIMED_OUT (RunPod's execution timeout) are UNAVAILABLE and
DEADLINE_EXCEEDED. Connection failures and RunPod's 5xx are ``TransportError`` (the hub retries
them); 401/403 mean the key from ``api_key_env`` was refused; 404 an unknown endpoint or job.

``local_api`` speaks to the runpod SDK's local test server (``--rp_serve_api``) instead: POST
for every path, no ``/{endpoint_id}`` prefix, ``/run`` only stores the job until ``/stream`` or
``/status`` runs it (so a stream arrives whole), and there is no ``/cancel`` or ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from core.config.models import RemoteEndpoint
from core.errors import (
    CallError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceFailed,
    ServiceUnavailable,
    TransportError,
    Unauthenticated,
    error_from_code,
)
from core.managers.endpoint import Endpoint
from core.managers.hub.transports.base import Metadata, StreamCall, UnaryCall
from core.wire import Kind, Operation

PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
_CODE_IN_TEXT = re.compile(
    r"\b(INVALID_ARGUMENT|NOT_FOUND|UNAUTHENTICATED|RESOURCE_EXHAUSTED|UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL)"
    r": ([^\n]+)"
)
_META_KEYS = {"x-request-id": "request_id", "x-session-id": "session_id", "x-turn-id": "turn_id"}


def job_input(op: Operation, request: Message, metadata: Metadata) -> dict[str, Any]:
    """The job ``input`` every worker takes: the operation, its proto3 JSON body, the call's ids."""
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    meta = {_META_KEYS[k]: v for k, v in metadata if k in _META_KEYS}
    return {"op": op.name, "body": body, "meta": meta}


@dataclass(slots=True)
class Job:
    """What main knows about one submitted job."""

    id: str
    status: str
    submitted: float
    started: bool = False


def _target(ep: Endpoint) -> RemoteEndpoint:
    if ep.remote is None or ep.remote.kind != "runpod":
        raise InvalidArgument(f"service {ep.name!r} is not a RunPod endpoint; it has no remote of kind runpod")
    return ep.remote


def endpoint_label(ep: Endpoint) -> str:
    """``<base_url>/<endpoint_id>``: where a job goes (for logs, status and errors; never the key)."""
    r = _target(ep)
    base = r.base_url.rstrip("/")
    return f"{base}/{r.endpoint_id}" if r.endpoint_id else base


class RunpodTransport:
    """Carries calls to RunPod serverless endpoints; one keep-alive client per base URL."""

    name = "runpod"

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the network (``httpx.MockTransport`` in unit tests)."""
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closed = False

    # ---- Transport protocol -------------------------------------------------------------------

    async def unary(self, call: UnaryCall) -> Message:
        ep, op = call.endpoint, call.operation
        r = _target(ep)
        # /runsync returns by queue_timeout_s at the latest, so a cold start is noticed and reported
        wait_s = max(1.0, min(r.runsync_wait_s, r.queue_timeout_s, call.remaining()))
        body = {"input": job_input(op, call.request, call.metadata)}
        path = "runsync" if r.local_api else f"runsync?wait={int(wait_s * 1000)}"
        sent = time.monotonic()
        reply = await self._request(ep, "POST", path, body, call.deadline)
        job = self._job(ep, reply, sent)
        try:
            while job.status in PENDING:
                await self._pause(ep, job, call.deadline)
                reply = await self._request(ep, "GET", f"status/{job.id}", None, call.deadline)
                job.status = str(reply.get("status", ""))
        except BaseException:
            await self.cancel(ep, job.id)
            raise
        chunks = self._outputs(ep, job, reply, op)
        if len(chunks) != 1:
            raise ServiceFailed(
                f"RunPod job {job.id} for {op.name} gave {len(chunks)} messages, not one; "
                "is the endpoint running this project's worker (services.runtime.runpod_worker)?"
            )
        return chunks[0]

    async def stream(self, call: StreamCall) -> AsyncGenerator[Message, None]:
        ep, op = call.endpoint, call.operation
        if op.kind is Kind.BIDI_STREAM or call.request is None:
            raise InvalidArgument(
                f"{op.name} is a bidirectional stream, which RunPod's job API cannot carry; use the unary "
                "operation (Transcribe for STT) or run this service locally"
            )
        body = {"input": job_input(op, call.request, call.metadata)}
        sent = time.monotonic()
        reply = await self._request(ep, "POST", "run", body, call.deadline)
        job = self._job(ep, reply, sent)
        done = False
        try:
            while True:
                reply = await self._request(ep, "GET", f"stream/{job.id}", None, call.deadline)
                job.status = str(reply.get("status", job.status))
                for msg in self._outputs(ep, job, reply, op, key="stream"):
                    job.started = True
                    yield msg
                if job.status in TERMINAL:
                    done = True
                    return
                await self._pause(ep, job, call.deadline)
        finally:
            if not done:  # closed early (barge-in), failed or past the deadline: stop the worker's work
                await self.cancel(ep, job.id)

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    # ---- operations beside calls -----------------------------------------------------------------

    async def cancel(self, ep: Endpoint, job_id: str) -> bool:
        """``POST /cancel/{id}``; False where the API has none (the SDK's local server) or it failed."""
        if _target(ep).local_api:
            return False
        try:
            with contextlib.suppress(CallError):
                await asyncio.shield(self._request(ep, "POST", f"cancel/{job_id}", None, None, timeout_s=5.0))
                return True
        except asyncio.CancelledError:  # the shielded request goes on; the caller is cancelled anyway
            raise
        return False

    async def health(self, ep: Endpoint, timeout_s: float = 5.0) -> dict[str, Any]:
        """``GET /health``: ``{"jobs": {...}, "workers": {...}}``; CallError when it cannot be had."""
        if _target(ep).local_api:
            raise NotFound("the runpod SDK's local API server has no /health")
        return await self._request(ep, "GET", "health", None, None, timeout_s=timeout_s)

    # ---- internals ------------------------------------------------------------------------------

    def _client(self, ep: Endpoint) -> httpx.AsyncClient:
        if self._closed:
            raise TransportError("the RunPod transport is closed", service=ep.name)
        base = _target(ep).base_url
        client = self._clients.get(base)
        if client is None:
            host = httpx.URL(base).host
            loopback = host in ("127.0.0.1", "localhost", "::1")
            # a proxy from the environment may be needed to reach RunPod, never for a local server
            client = self._clients[base] = httpx.AsyncClient(
                timeout=None, trust_env=not loopback, transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return client

    def _url(self, ep: Endpoint, path: str) -> str:
        return f"{endpoint_label(ep)}/{path}"

    async def _request(
        self, ep: Endpoint, method: str, path: str, body: Mapping[str, Any] | None, deadline: float | None,
        *, timeout_s: float | None = None,
    ) -> dict[str, Any]:
        r = _target(ep)
        if r.local_api:
            method = "POST"  # the SDK's local server routes POST only
        left = timeout_s
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise DeadlineExceeded(f"deadline passed before {method} {path} to {endpoint_label(ep)}",
                                       service=ep.name)
        headers = {"accept": "application/json"}
        if ep.api_key:
            headers["authorization"] = f"Bearer {ep.api_key}"
        try:
            resp = await self._client(ep).request(
                method, self._url(ep, path), json=body, headers=headers, timeout=httpx.Timeout(left, connect=10.0)
            )
        except httpx.TimeoutException as e:
            if isinstance(e, httpx.ConnectTimeout):
                raise TransportError(f"cannot connect to {endpoint_label(ep)}: {e!r}", service=ep.name) from e
            raise DeadlineExceeded(
                f"{method} {path} to {endpoint_label(ep)} did not answer before the deadline", service=ep.name
            ) from e
        except httpx.HTTPError as e:
            raise TransportError(f"{method} {path} to {endpoint_label(ep)} failed: {e!r}", service=ep.name) from e
        if resp.status_code >= 400:
            raise self._http_error(ep, path, resp)
        try:
            data = resp.json()
        except ValueError as e:
            raise TransportError(
                f"{endpoint_label(ep)} answered {path} with a non-JSON body ({resp.text[:200]!r})", service=ep.name
            ) from e
        if not isinstance(data, dict):
            raise TransportError(f"{endpoint_label(ep)} answered {path} with {type(data).__name__}, not an object",
                                 service=ep.name)
        return data

    def _http_error(self, ep: Endpoint, path: str, resp: httpx.Response) -> CallError:
        where, key_env = endpoint_label(ep), _target(ep).api_key_env or "api_key_env"
        text = resp.text[:300]
        if resp.status_code in (401, 403):
            return Unauthenticated(
                f"RunPod refused the API key for {where} ({resp.status_code}); set ${key_env} to a key with "
                "access to this endpoint", service=ep.name,
            )
        if resp.status_code == 404:
            return NotFound(
                f"{where}/{path.split('?', maxsplit=1)[0]} does not exist (404): check the endpoint id "
                "(UV_<SERVICE>_ENDPOINT_ID) and base_url", service=ep.name,
            )
        if resp.status_code == 429:
            retry = resp.headers.get("retry-after", "")
            return ResourceExhausted(
                f"RunPod throttled {where} (429): {text}", retry_after_s=float(retry) if retry.isdigit() else 1.0,
                service=ep.name,
            )
        if resp.status_code in (400, 413, 422):
            return InvalidArgument(f"RunPod rejected the job for {where} ({resp.status_code}): {text}",
                                   service=ep.name)
        return TransportError(f"{where} answered {path} with {resp.status_code}: {text}", service=ep.name)

    def _job(self, ep: Endpoint, reply: Mapping[str, Any], sent: float) -> Job:
        job_id, status = reply.get("id"), str(reply.get("status", ""))
        if not isinstance(job_id, str) or not job_id:
            raise TransportError(f"{endpoint_label(ep)} accepted a job but returned no id: {reply!r:.200}",
                                 service=ep.name)
        return Job(job_id, status, sent)

    async def _pause(self, ep: Endpoint, job: Job, deadline: float) -> None:
        """Wait one poll interval; fail a job stuck IN_QUEUE past ``queue_timeout_s`` (cold start)."""
        r = _target(ep)
        waited = time.monotonic() - job.submitted
        if job.status == "IN_QUEUE" and not job.started and waited > r.queue_timeout_s:
            raise ServiceUnavailable(
                f"RunPod job {job.id} waited {waited:.0f} s IN_QUEUE at {endpoint_label(ep)} without a worker "
                f"taking it (a cold start loading the model, or max workers busy); it was cancelled. "
                f"Raise queue_timeout_s ({r.queue_timeout_s:g} s) or keep a worker warm (min workers >= 1)",
                service=ep.name,
            )
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            stage = "waiting in the queue (a cold start?)" if job.status == "IN_QUEUE" else "running"
            raise DeadlineExceeded(
                f"RunPod job {job.id} at {endpoint_label(ep)} was still {stage} at the call's deadline; "
                "it was cancelled", service=ep.name,
            )
        await asyncio.sleep(min(r.poll_interval_s, left))

    def _outputs(
        self, ep: Endpoint, job: Job, reply: Mapping[str, Any], op: Operation, key: str = "output"
    ) -> list[Message]:
        """The response messages a reply carries; raises the job's error for a failed one."""
        status = job.status
        if status == "FAILED":
            raise job_error(ep, job.id, reply.get("error") or reply.get("output"))
        if status == "CANCELLED":
            raise ServiceUnavailable(f"RunPod job {job.id} at {endpoint_label(ep)} was cancelled", service=ep.name)
        if status == "TIMED_OUT":
            raise DeadlineExceeded(
                f"RunPod job {job.id} at {endpoint_label(ep)} ran past the endpoint's execution timeout",
                service=ep.name,
            )
        raw = reply.get(key)
        if key == "stream":
            items = [c.get("output") if isinstance(c, dict) else c for c in (raw or [])]
        else:
            items = raw if isinstance(raw, list) else [] if raw is None else [raw]
        out: list[Message] = []
        for item in items:
            for chunk in item if isinstance(item, list) else [item]:  # an aggregated stream nests lists
                if isinstance(chunk, dict) and "error" in chunk:
                    raise job_error(ep, job.id, chunk["error"])
                if not isinstance(chunk, dict) or not isinstance(chunk.get("message"), dict):
                    raise ServiceFailed(
                        f"RunPod job {job.id} at {endpoint_label(ep)} returned {chunk!r:.200} where a "
                        '{"message": ...} chunk was expected; is the endpoint running this project\'s worker?',
                        service=ep.name,
                    )
                msg = op.response()
                try:
                    json_format.ParseDict(chunk["message"], msg)
                except json_format.ParseError as e:
                    raise ServiceFailed(f"RunPod job {job.id}: bad {op.name} message: {e}", service=ep.name) from e
                out.append(msg)
        if status == "COMPLETED" and key == "output" and not out:
            raise ServiceFailed(f"RunPod job {job.id} at {endpoint_label(ep)} completed with no output",
                                service=ep.name)
        return out


def job_error(ep: Endpoint, job_id: str, error: Any) -> CallError:
    """The ``core.errors`` exception for a failed job's error (our worker's dict, or the SDK's text)."""
    where = endpoint_label(ep)
    if isinstance(error, str):
        with contextlib.suppress(ValueError):
            error = json.loads(error)
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return error_from_code(error["code"], f"{error.get('message', '')} (RunPod job {job_id} at {where})",
                               service=ep.name)
    if isinstance(error, dict):  # the SDK's own shape: error_type, error_message, error_traceback
        error = error.get("error_message") or error.get("message") or json.dumps(error)[:500]
    text = str(error or "no error message")
    m = _CODE_IN_TEXT.search(text)
    if m:
        return error_from_code(m.group(1), f"{m.group(2).strip()} (RunPod job {job_id} at {where})",
                               service=ep.name)
    first = text.strip().splitlines()[0] if text.strip() else text
    return ServiceFailed(f"RunPod job {job_id} at {where} failed: {first[:500]}", service=ep.name)
