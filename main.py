"""Ultravox Pipeline main process: gateway, supervisor of the model services, and the hub.

    python main.py [--profile local-pc] [--host 127.0.0.1] [--port 8080] [--log-format json|text]
    python main.py --prepare-only     # build every service venv of the profile, then exit

Logs: the terminal gets text unless a format is chosen; main's own file (<var>/log/main.log,
rotated) and the service logs (<var>/log/<service>.log) are JSON lines unless ``--log-format
text`` (or UV_LOG_FORMAT=text) asks for text everywhere. See docs/observability.md.

Normally started by ``./start.sh``. Ctrl-C (or SIGTERM) stops every service gracefully.
"""

from __future__ import annotations

import os

# Spawning services uses fork (preexec_fn sets PR_SET_PDEATHSIG) while gRPC threads run; gRPC's
# fork handlers are not needed and only print warnings. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

import uvicorn

from core.config import load_settings
from core.config.models import LogPolicy
from core.context import GlobalContext, ProcessContext
from core.errors import UltravoxError
from core.gateway import create_app
from core.logs import LOG_FORMAT_ENV, LogFormat, add_log_file, setup_logging
from core.managers.supervisor import ServiceSupervisor

log = logging.getLogger("ultravox.main")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="main.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", default=None, help="profile from config/profiles.yaml (env PROFILE; default local-pc)")
    p.add_argument("--host", default=None, help="interface to bind (env HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (env PORT; default 8080)")
    p.add_argument(
        "--log-format", choices=("json", "text"), default=None,
        help="log format (env UV_LOG_FORMAT); the terminal defaults to text, log files to json",
    )
    p.add_argument(
        "--log-file", default=None,
        help="main's own log file, rotated (default <var>/log/main.log; 'none' for the terminal only)",
    )
    p.add_argument("--prepare-only", action="store_true", help="build the service venvs and exit")
    return p.parse_args(argv)


async def prepare_only(g: GlobalContext) -> None:
    await ServiceSupervisor(ProcessContext(global_=g, name="main")).prepare()


def port_problem(host: str, port: int) -> str:
    """Say why main cannot bind ``host:port`` before anything is spawned, or return ''."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return (f"main cannot listen on {host}:{port} ({e.strerror}); another process holds the port: "
                    "stop it, or pick another port with --port / PORT")
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.log_format or os.environ.get(LOG_FORMAT_ENV, "").lower() or None
    explicit: LogFormat | None = None if chosen is None else "text" if chosen == "text" else "json"
    setup_logging("main", explicit or "text")
    if explicit:
        os.environ[LOG_FORMAT_ENV] = explicit  # the services inherit main's environment
    env = dict(os.environ)
    if args.host:
        env["HOST"] = args.host
    if args.port:
        env["PORT"] = str(args.port)
    try:
        settings = load_settings(env=env, profile=args.profile)
        g = GlobalContext.create(settings)
        if args.log_file != "none":
            policy = LogPolicy.model_validate({})
            path = Path(args.log_file) if args.log_file else g.paths.logs / "main.log"
            add_log_file(path, "main", explicit or "json", max_bytes=policy.max_bytes, backups=policy.backups)
        if args.prepare_only:
            asyncio.run(prepare_only(g))
            return 0
        app = create_app(g)
    except UltravoxError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    gw = settings.gateway
    if problem := port_problem(gw.host, gw.port):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    log.info("main starting: profile=%s http://%s:%d", settings.profile.name, gw.host, gw.port)
    config = uvicorn.Config(
        app, host=gw.host, port=gw.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=15, ws_max_size=4 * 1024 * 1024,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C after its graceful shutdown (lifespan included) has finished
        log.info("main stopped by Ctrl-C")
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
