"""A model service as a RunPod serverless worker: the same service code and engines, one job per call.

``python -m services.runtime.runpod_worker --role stt`` (or ``python -m services.stt.runpod_worker``)
reads ``config/`` like a ``--standalone`` service (``PROFILE`` and ``UV_<SERVICE>_*`` env
overrides apply), loads the model once, before the first job, then hands one async-generator
handler to ``runpod.serverless.start``. The runpod SDK's own flags pass through:
``--rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000`` serves its local test API.

Job input, the same for every operation::

    {"op": "Transcribe", "body": {<proto3 JSON of TranscribeRequest; bytes base64>},
     "meta": {"request_id": "...", "session_id": "...", "turn_id": "..."}}

Output: one ``{"message": <proto3 JSON>}`` per response message: exactly one for a unary
operation (Transcribe, Synthesize, DetectSpeech, ListVoices, Info...), one per chunk as it is
made for a streaming one (SynthesizeStream, Generate), read with ``/stream``. A call that fails
yields ``{"error": {"code": "INVALID_ARGUMENT", "message": "..."}}`` and the worker serves the
next job: the handler never raises (the SDK's local server answers a raising generator with a
bare 500, and production would mark a crash with a traceback, not a message). Bidirectional
operations (StreamingRecognize) cannot travel as a job; they are refused with a message.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from google.protobuf import json_format

from core.context import ServiceContext, StandaloneContext
from core.errors import CallError, InvalidArgument, ServiceFailed
from core.logs import clean_id, register_secret
from core.wire import Kind
from services.runtime.api import CallInfo, ModelService, ServiceFactory
from services.runtime.dispatch import Dispatcher
from services.runtime.lifecycle import package_version
from services.runtime.logs import configure_logging
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState

log = logging.getLogger("ultravox.runpod_worker")
Handler = Callable[[Mapping[str, Any]], AsyncGenerator[dict[str, Any], None]]


def _factories() -> dict[str, Callable[[], ServiceFactory]]:
    """Role -> the service class, imported only for the role asked (each lives in its own venv)."""
    def stt() -> ServiceFactory:
        from services.stt.service import SttService  # noqa: PLC0415
        return SttService

    def tts() -> ServiceFactory:
        from services.tts.service import TtsService  # noqa: PLC0415
        return TtsService

    def llm() -> ServiceFactory:
        from services.llm.service import LlmService  # noqa: PLC0415
        return LlmService

    return {"stt": stt, "tts": tts, "llm": llm}


class Worker:
    """One loaded service and the RunPod handler that drives its dispatcher."""

    def __init__(self, ctx: ServiceContext, service: ModelService) -> None:
        self.ctx, self.service, self.name = ctx, service, ctx.config.name
        self.state = ServiceState(self.name)
        self.dispatcher = Dispatcher(
            service_name=self.name, service=service, token=ctx.token, state=self.state,
            metrics=RuntimeMetrics(ctx.process.registry, self.name, ctx.config.role), version=package_version(),
        )

    def load(self) -> float:
        """Load the model now (once per worker process, before the first job); returns seconds."""
        self.state.loading()
        t0 = time.perf_counter()
        self.service.load()
        seconds = time.perf_counter() - t0
        self.state.loaded(seconds)
        log.info("ready: model loaded", extra={"load_s": round(seconds, 3), "service": self.name})
        return seconds

    async def handle(self, job: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The RunPod handler: run the job's operation, yield its messages or one error."""
        try:
            async for msg in self._run(job):
                yield {"message": msg}
        except CallError as e:
            yield {"error": e.to_dict()}
        except Exception as e:  # never let the SDK see a raise: it would hide the message
            log.exception("job %s failed", job.get("id"))
            yield {"error": ServiceFailed(f"{type(e).__name__}: {e}").to_dict()}

    async def _run(self, job: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        inp = job.get("input")
        if not isinstance(inp, Mapping):
            raise InvalidArgument('the job input must be an object: {"op": "<Operation>", "body": {...}}')
        method, body, meta = inp.get("op"), inp.get("body", {}), inp.get("meta") or {}
        if not isinstance(method, str) or not method:
            raise InvalidArgument(
                f'the job input has no "op"; name an operation of {self.ctx.config.role}: '
                f"{', '.join(sorted(self.dispatcher.operations))}"
            )
        op = self.dispatcher.operation(method)  # NotFound names the available ones
        if op.kind is Kind.BIDI_STREAM:
            raise InvalidArgument(
                f"{method} is a bidirectional stream, which a RunPod job cannot carry; send the whole audio "
                "to Transcribe instead"
            )
        if not isinstance(body, Mapping) or not isinstance(meta, Mapping):
            raise InvalidArgument('"body" and "meta" must be objects (body: the request in proto3 JSON)')
        request = op.request()
        try:
            json_format.ParseDict(dict(body), request)
        except json_format.ParseError as e:
            raise InvalidArgument(f"body is not a valid {op.request.DESCRIPTOR.full_name}: {e}") from e
        call = CallInfo(
            method=method, protocol="runpod", request_id=clean_id(str(meta.get("request_id", "")))
            or f"rp-{job.get('id') or uuid.uuid4().hex}",
            session_id=clean_id(str(meta.get("session_id", ""))), turn_id=clean_id(str(meta.get("turn_id", ""))),
        )
        token = self.ctx.token
        if op.kind is Kind.UNARY:
            response = await self.dispatcher.invoke(method, request, call, token)
            yield json_format.MessageToDict(response, preserving_proto_field_name=True)
            return
        stream = self.dispatcher.stream(method, request, call, token)
        try:
            async for msg in stream:
                yield json_format.MessageToDict(msg, preserving_proto_field_name=True)
        finally:
            await stream.aclose()


def build_worker(role: str, *, service: str | None = None, env: Mapping[str, str] | None = None) -> Worker:
    """The worker of ``role`` (service ``service`` of config/, default the role's name), not loaded yet."""
    factories = _factories()
    if role not in factories:
        raise InvalidArgument(f"unknown role {role!r}; use one of: {', '.join(factories)}")
    ctx = StandaloneContext.for_service(service or role, env=env)
    if ctx.config.role != role:
        raise InvalidArgument(f"service {ctx.config.name!r} has role {ctx.config.role!r}, not {role!r}")
    for key, value in ctx.config.env.items():  # what main would set when it spawns the service
        os.environ.setdefault(key, value)
    register_secret(ctx.token)
    return Worker(ctx, factories[role]()(ctx))


def main(argv: list[str] | None = None, default_role: str | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m services.runtime.runpod_worker",
        description="Serve one model service as a RunPod serverless worker. The runpod SDK's flags "
        "(--rp_serve_api, --rp_api_host, --rp_api_port, --rp_log_level...) are passed through.",
    )
    # an option, not a positional: the SDK's own flags (--rp_api_host 127.0.0.1) pass through unparsed
    p.add_argument("--role", required=default_role is None, default=default_role, choices=["stt", "tts", "llm"])
    p.add_argument("--service", default=None, help="service name in services.yaml (default: the role)")
    p.add_argument("--log-level", default=os.environ.get("UV_LOG_LEVEL", "INFO"))
    args, rest = p.parse_known_args(argv)
    faulthandler.enable(all_threads=True)  # a native crash prints every thread's stack to the log
    configure_logging(args.service or args.role, args.log_level)
    try:
        worker = build_worker(args.role, service=args.service)
        worker.load()
    except Exception as e:
        log.error("cannot start the %s worker: %s", args.role, e)
        return 3
    import runpod  # noqa: PLC0415  (only in the *-runpod venvs)

    sys.argv = [sys.argv[0], *rest]  # the SDK parses its own flags from sys.argv
    runpod.serverless.start({"handler": worker.handle, "return_aggregate_stream": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
