"""``python -m services.<role>``: build the context, configure logging, run, map failures to exit codes.

Launched by main, a service reads its whole context from the ``UV_LAUNCH_SPEC`` env var. With
``--standalone`` it reads config/ itself (for debugging, or a service on another host) and
prints the internal token it uses when it generated one.

Exit codes: 0 stopped cleanly, 1 crashed, 2 bad arguments or config, 3 could not start (port in
use, model failed to load), 4 exited because main disappeared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from core.context import LAUNCH_SPEC_ENV, ServiceContext, StandaloneContext
from core.errors import ConfigError, UltravoxError
from core.logs import register_secret
from services.runtime.api import ServiceFactory
from services.runtime.lifecycle import EXIT_CRASH, EXIT_STARTUP, EXIT_USAGE, ServiceRunner
from services.runtime.logs import configure_logging

TOKEN_ENV = "UV_INTERNAL_TOKEN"


def _parser(default_service: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m services.{default_service}",
        description="Run one model service. Main starts it with UV_LAUNCH_SPEC set; "
        "use --standalone to run it alone.",
    )
    p.add_argument("--standalone", action="store_true", help="read config/ instead of UV_LAUNCH_SPEC")
    p.add_argument("--service", default=default_service, help="service name in services.yaml (standalone)")
    p.add_argument("--config-dir", type=Path, default=None, help="config folder (standalone)")
    p.add_argument("--log-level", default=os.environ.get("UV_LOG_LEVEL", "INFO"), help="default INFO")
    return p


def _context(args: argparse.Namespace) -> ServiceContext:
    if args.standalone:
        ctx = StandaloneContext.for_service(args.service, config_dir=args.config_dir)
        for key, value in ctx.config.env.items():  # main sets these when it spawns the service
            os.environ.setdefault(key, value)
        if not os.environ.get(TOKEN_ENV):
            print(
                f"standalone {ctx.config.name}: internal token for this run: {ctx.token} "
                f"(set {TOKEN_ENV} to choose one)",
                flush=True,
            )
        return ctx
    if LAUNCH_SPEC_ENV not in os.environ:
        raise UltravoxError(
            f"{LAUNCH_SPEC_ENV} is not set: main sets it when it spawns this service; "
            "to run the service by itself, pass --standalone"
        )
    try:
        return ServiceContext.from_launch_env()
    except (ValueError, KeyError, TypeError) as e:
        raise UltravoxError(
            f"{LAUNCH_SPEC_ENV} is not a valid launch spec ({type(e).__name__}: {e}); "
            "it must come from ServiceContext.launch_env() of the same project version"
        ) from e


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once the service has stopped, skipping interpreter finalization.

    By then the servers are closed, calls drained and logs flushed; what is left are native
    threads (a model still loading in CTranslate2 or onnxruntime, gRPC's pollers). Finalizing
    under them crashed: a daemon thread forced to exit while it held C++ frames aborted the
    process ("FATAL: exception not rethrown", exit -6) after a clean "stopped" line, turning
    exit code 4 (orphaned) into SIGABRT. Nothing that finalization would do is needed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def service_main(default_service: str, factory: ServiceFactory, argv: list[str] | None = None) -> int:
    """Run one service process to completion and return its exit code."""
    # A crash in native code (gRPC, onnxruntime, CTranslate2, llama.cpp) then prints every
    # thread's Python stack to the service log instead of leaving only "exit -11".
    faulthandler.enable(all_threads=True)
    args = _parser(default_service).parse_args(argv)
    configure_logging(args.service, args.log_level)
    log = logging.getLogger(f"ultravox.{args.service}")
    try:
        ctx = _context(args)
    except UltravoxError as e:
        log.error("cannot start: %s", e)
        return EXIT_USAGE
    register_secret(ctx.token)  # the internal token never reaches a log line
    configure_logging(ctx.config.name, args.log_level)
    try:
        return asyncio.run(_serve(ctx, factory))
    except ConfigError as e:
        log.error("cannot start: %s", e)
        return EXIT_USAGE
    except UltravoxError as e:
        log.error("cannot start: %s", e)
        return EXIT_STARTUP
    except Exception:
        log.exception("service %r crashed", ctx.config.name)
        return EXIT_CRASH


async def _serve(ctx: ServiceContext, factory: ServiceFactory) -> int:
    service = factory(ctx)
    try:
        runner = ServiceRunner(ctx, service)
    except BaseException:
        service.close()
        raise
    return await runner.run()
