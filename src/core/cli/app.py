"""``sm`` commands: list, describe, health, start, stop, restart, logs, call, profile list|show|activate,
breakers [reset SERVICE], keys list|create|delete|hash, token create|revoke, scale ROLE N.

Finds main through ``--url`` or ``SM_URL`` (default http://127.0.0.1:8080). ``--json`` prints
machine-readable output for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from core.access.keys import digest, new_key
from core.cli.client import ApiError, ControlClient, MainUnreachable

app = typer.Typer(help="Manage the Ultravox Pipeline services through main's control API.", no_args_is_help=True)


class _State:
    url: str | None = None
    as_json: bool = False


def _client(st: _State) -> ControlClient:
    return ControlClient(st.url)


@app.callback()
def _root(
    ctx: typer.Context,
    url: str = typer.Option(None, "--url", envvar="SM_URL", help="Main's URL (default http://127.0.0.1:8080)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    st = _State()
    st.url, st.as_json = url, as_json
    ctx.obj = st


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.0f} MB" if n else "-"


def _dur(s: float | None) -> str:
    if not s:
        return "-"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List services with state, pid, ports, restarts, uptime and memory."""
    st: _State = ctx.obj
    rows = _client(st).get("/services")
    if st.as_json:
        _print_json(rows)
        return
    typer.echo(
        f"{'NAME':<10}{'STATE':<10}{'PID':>8}  {'GRPC':>6} {'HTTP':>6}  {'RESTARTS':>8}  {'UPTIME':>8}  "
        f"{'RSS':>8}  LAST ERROR"
    )
    for r in rows:
        if r.get("remote"):  # a RunPod endpoint: no process here; where it is and what it has
            typer.echo(f"{r['name']:<10}{r['state']:<14}{_remote_summary(r)}")
            continue
        typer.echo(
            f"{r['name']:<10}{r['state']:<10}{r.get('pid') or '-':>8}  {r.get('grpc_port') or '-':>6} "
            f"{r.get('http_port') or '-':>6}  {r.get('restarts', 0):>8}  {_dur(r.get('uptime_s')):>8}  "
            f"{_mb(r.get('rss_bytes')):>8}  {(r.get('last_error') or '')[:60]}"
        )
    if any(r.get("role") == "cluster" and r.get("state") == "RUNNING" for r in rows):
        _print_deployments(_client(st).get("/api/cluster"))


def _print_deployments(status: dict[str, Any]) -> None:
    """The cluster's Ray Serve deployments: replicas running, starting, unhealthy, target, restarts."""
    typer.echo(f"\nray serve ({status['mode']} {status['address']}, {status['nodes']} node(s), grpc "
               f":{status['serve_grpc_port']}, http :{status['serve_http_port']})")
    typer.echo(f"{'DEPLOYMENT':<12}{'APP':<10}{'STATUS':<12}{'RUNNING':>8}{'STARTING':>9}{'UNHEALTHY':>10}"
               f"{'TARGET':>10}{'RESTARTS':>9}  MESSAGE")
    for d in status["deployments"]:
        target = (f"{d['min_replicas']}-{d['max_replicas']}" if d["autoscaling"] else str(d["target_replicas"]))
        typer.echo(f"{d['role']:<12}{d['application']:<10}{d['status']:<12}{d['running']:>8}{d['starting']:>9}"
                   f"{d['unhealthy']:>10}{target:>10}{d['restarts']:>9}  {d['message'][:60]}")


@app.command()
def scale(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="stt, tts, llm (or the Serve application's name)."),
    replicas: int = typer.Argument(..., help="Replicas (an autoscaling deployment: its new minimum)."),
    max_replicas: int = typer.Option(0, "--max", help="Autoscaling only: the new maximum."),
) -> None:
    """Set a Ray Serve deployment's replicas (cluster profile); returns once Ray accepted it."""
    st: _State = ctx.obj
    r = _client(st).post(f"/api/cluster/deployments/{role}/scale",
                         json={"replicas": replicas, "max_replicas": max_replicas}, timeout=660)
    if st.as_json:
        _print_json(r)
        return
    _print_deployments(r)


def _remote_summary(r: dict[str, Any]) -> str:
    workers, jobs = r.get("workers") or {}, r.get("jobs") or {}
    parts = [f"{r.get('kind', 'remote')} {r.get('endpoint', '')}"]
    if workers:
        parts.append(f"workers idle {workers.get('idle', 0)} running {workers.get('running', 0)}")
    if jobs:
        parts.append(f"queue {jobs.get('inQueue', 0)}")
    if r.get("last_error"):
        parts.append(str(r["last_error"])[:100])
    return "  ".join(parts)


@app.command()
def describe(ctx: typer.Context, name: str) -> None:
    """Everything main knows about one service, its effective config included."""
    st: _State = ctx.obj
    info = _client(st).get(f"/services/{name}")
    if st.as_json:
        _print_json(info)
        return
    cfg = info.pop("config", {})
    for k, v in info.items():
        typer.echo(f"{k:>16}: {v}")
    typer.echo(f"{'config':>16}:")
    for k, v in cfg.items():
        typer.echo(f"{'':>18}{k}: {v}")


@app.command()
def health(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Also show each service's state and readiness."),
) -> None:
    """Main's health; exit code 0 when everything is RUNNING, 1 otherwise."""
    st: _State = ctx.obj
    c = _client(st)
    body = c.get("/health", ok_statuses=(503,))
    services = c.get("/services") if all_ else None
    if st.as_json:
        _print_json({"health": body, "services": services} if all_ else body)
    else:
        typer.echo(f"main: {body['status']} (profile {body.get('profile')})")
        if body.get("error"):
            typer.echo(f"  error: {body['error']}")
        for name, why in (body.get("remote_errors") or {}).items():  # which RunPod endpoint is down, and why
            typer.echo(f"  remote {name} is down: {why}")
        for s in services or []:
            mark = "ok " if s["state"] in ("RUNNING", "REMOTE_READY", "REMOTE_COLD") else "-- "
            err = f"  ({s['last_error']})" if s.get("last_error") else ""
            typer.echo(f"  {mark}{s['name']:<10}{s['state']}{err}")
    raise typer.Exit(0 if body["status"] == "ok" else 1)


def _action(ctx: typer.Context, name: str, action: str) -> None:
    st: _State = ctx.obj
    r = _client(st).post(f"/services/{name}/{action}")
    if st.as_json:
        _print_json(r)
    else:
        typer.echo(f"{name}: {r['state']}" + (f" (pid {r['pid']})" if r.get("pid") else ""))


@app.command()
def start(ctx: typer.Context, name: str) -> None:
    """Start a stopped or FATAL service."""
    _action(ctx, name, "start")


@app.command()
def stop(ctx: typer.Context, name: str) -> None:
    """Stop a service gracefully (SIGTERM, grace period, then SIGKILL)."""
    _action(ctx, name, "stop")


@app.command()
def restart(ctx: typer.Context, name: str) -> None:
    """Stop then start a service."""
    _action(ctx, name, "restart")


@app.command()
def logs(
    ctx: typer.Context,
    name: str,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    lines: int = typer.Option(50, "-n", "--lines", help="Lines from the end to print first."),
) -> None:
    """Print a service's log (stdout and stderr of the process, rotated)."""
    st: _State = ctx.obj
    c = _client(st)
    r = c.get(f"/services/{name}/logs", params={"tail": lines})
    if st.as_json and not follow:
        _print_json(r)
        return
    for line in r["lines"]:
        typer.echo(line)
    offset = r["offset"]
    while follow:
        time.sleep(0.5)
        r = c.get(f"/services/{name}/logs", params={"offset": offset})
        for line in r["lines"]:
            typer.echo(line)
        offset = r["offset"]


@app.command()
def call(
    ctx: typer.Context,
    service: str,
    method: str,
    data: str = typer.Option("{}", "--data", "-d", help="Request as proto3 JSON, or @file.json."),
    protocol: str = typer.Option(None, "--protocol", "-p", help="Force grpc, msgpack or json."),
    deadline: float = typer.Option(None, "--deadline", help="Seconds."),
) -> None:
    """Call a service operation through main's hub, e.g. `sm call stt Info`."""
    st: _State = ctx.obj
    raw = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as e:
        typer.echo(f"error: --data is not valid JSON ({e}); pass a JSON object or @file.json", err=True)
        raise typer.Exit(2) from e
    body: dict[str, Any] = {"service": service, "method": method, "payload": payload}
    if protocol:
        body["protocol"] = protocol
    if deadline:
        body["deadline_s"] = deadline
    r = _client(st).post("/call", json=body)
    _print_json(r if st.as_json else r["response"])


profile_app = typer.Typer(help="List the profiles and show what one would change.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("list")
def profile_list(ctx: typer.Context) -> None:
    """Profiles in config/profiles.yaml; * marks the active one."""
    st: _State = ctx.obj
    rows = _client(st).get("/api/profiles")
    if st.as_json:
        _print_json(rows)
        return
    for r in rows:
        mark = "*" if r["active"] else " "
        typer.echo(f"{mark} {r['name']:<14}{r['device']:<6}{r['description'][:90]}")


@profile_app.command("show")
def profile_show(ctx: typer.Context, name: str) -> None:
    """A profile's effective config per service, and what differs from the active profile."""
    st: _State = ctx.obj
    info = _client(st).get(f"/api/profiles/{name}")
    if st.as_json:
        _print_json(info)
        return
    active = " (active)" if info["active"] else f" (active: {info['active_profile']})"
    typer.echo(f"{info['name']}{active}: {info['description']}")
    for svc, cfg in info["services"].items():
        where = f"remote {cfg['remote']['kind']}" if cfg.get("remote") else f"{cfg['device']}, extra {cfg['extra']}"
        typer.echo(f"  {svc:<6}{cfg['engine']} {cfg['model']} ({where}){'' if cfg['enabled'] else ' disabled'}")
    changes = info["changes"]
    if not changes:
        typer.echo("no change against the active profile")
    for svc, fields in changes.items():
        typer.echo(f"  would change {svc}: " + "; ".join(
            f"{f} {json.dumps(v['active'])} -> {json.dumps(v['new'])}" for f, v in fields.items()))


@profile_app.command("activate")
def profile_activate(
    ctx: typer.Context,
    name: str,
    service: list[str] = typer.Option(None, "--service", "-s", help="Only this service (repeatable)."),
    stop_start: bool = typer.Option(False, "--stop-start", help="Stop each service before starting its new "
                                    "instance: less memory, but the service is down meanwhile."),
) -> None:
    """Switch the running main to profile NAME, service by service, without dropping a conversation."""
    st: _State = ctx.obj
    body = {"service": service or None, "mode": "stop-start" if stop_start else "blue-green"}
    r = _client(st).post(f"/api/profiles/{name}/activate", json=body, ok_statuses=(503,), timeout=1800)
    if st.as_json:
        _print_json(r)
    else:
        typer.echo(f"{r['from']} -> {r['to']}: {r['outcome']} in {r['total_s']:.1f}s ({r['mode']}); "
                   f"active profile: {r['active_profile']}")
        for svc, s in r["services"].items():
            if s["ok"]:
                typer.echo(f"  {svc}: pid {s['old_pid']} -> {s['new_pid']}, new instance ready in {s['start_s']:.1f}s, "
                           f"old drained in {s['drain_s']:.1f}s")
            else:
                typer.echo(f"  {svc}: {s['error']}")
                for line in s["log_tail"][-10:]:
                    typer.echo(f"    | {line}")
        if r["unchanged"]:
            typer.echo(f"  unchanged: {', '.join(r['unchanged'])}")
    if r["outcome"] == "failed":
        raise typer.Exit(1)


breakers_app = typer.Typer(
    help="The hub's circuit breakers and retries per service; `sm breakers reset SERVICE` closes one.",
    invoke_without_command=True,
)
app.add_typer(breakers_app, name="breakers")


def _ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{_dur(max(now - t, 1.0))} ago"


def _breaker_state(b: dict[str, Any]) -> str:
    if b["state"] == "open" and b.get("probe_in_s") is not None:
        return f"open (probe in {b['probe_in_s']:.0f}s)"
    return str(b["state"])


@breakers_app.callback()
def breakers_list(ctx: typer.Context) -> None:
    """Each service's breaker (state, consecutive failures, last failure, retries), then its protocols
    (marked down or up, failed/all attempts)."""
    if ctx.invoked_subcommand is not None:
        return
    st: _State = ctx.obj
    report = _client(st).resilience()
    if st.as_json:
        _print_json(report)
        return
    now = time.time()
    typer.echo(f"{'SERVICE':<14}{'PROTOCOL':<10}{'STATE':<22}{'FAILURES':>9}  {'RETRIES':<18}LAST FAILURE")
    for s in report["services"]:
        b, r = s["breaker"], s["retries"]
        retries = f"{r['attempted']} ({r['succeeded']} ok, {r['exhausted']} spent)"
        last = f"{_ago(b['last_failure_at'], now)}: {b['last_failure']}" if b["last_failure"] else "-"
        typer.echo(f"{s['service']:<14}{'-':<10}{_breaker_state(b):<22}{b['consecutive_failures']:>9}  "
                   f"{retries:<18}{last[:100]}")
        for p in s["protocols"]:
            state = f"down ({p['down_for_s']:.1f}s)" if p["down"] else "up"
            typer.echo(f"{'':<14}{p['protocol']:<10}{state:<22}{p['failures']:>4}/{p['calls']}")


@breakers_app.command("reset")
def breakers_reset(ctx: typer.Context, service: str) -> None:
    """Close SERVICE's breaker now, zero its failures and clear its protocols' down marks."""
    st: _State = ctx.obj
    r = _client(st).reset_breaker(service)
    if st.as_json:
        _print_json(r)
        return
    cleared = ", ".join(r["cleared_down"]) or "none"
    typer.echo(f"{r['service']}: breaker {r['now']['breaker']['state']} (was {r['previous_state']} after "
               f"{r['previous_failures']} consecutive failure(s); down marks cleared: {cleared})")


keys_app = typer.Typer(help="API keys with roles (admin key needed, in UV_API_KEY); `sm keys hash` works offline.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
token_app = typer.Typer(help="Short-lived client tokens for browsers (any key, in UV_API_KEY).", no_args_is_help=True)
app.add_typer(token_app, name="token")
_SPANS = {"m": 60, "h": 3600, "d": 86400}


def _span_s(text: str) -> float:
    """``90m``, ``12h``, ``30d`` (or plain seconds) as seconds."""
    unit = text[-1:].lower()
    try:
        return float(text[:-1]) * _SPANS[unit] if unit in _SPANS else float(text)
    except ValueError as e:
        raise typer.BadParameter(f"{text!r}: give a number with m, h or d (90m, 12h, 30d)") from e


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every key main accepts (from the env, the keys file and the API), by name; never the key."""
    st: _State = ctx.obj
    r = _client(st).get("/api/keys")
    if st.as_json:
        _print_json(r)
        return
    now = time.time()
    for k in r["keys"]:
        exp = "never" if k["expires_at"] is None else (
            "EXPIRED" if k["expires_at"] <= now else f"in {_dur(k['expires_at'] - now)}")
        lim = k["rate_limits"] or {}
        limits = f"{lim['per_minute']}/min {lim['per_hour']}/h" if lim else "default limits"
        typer.echo(f"{k['name']:<20}{k['role']:<10}{k['source']:<6}expires {exp:<12}{limits}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context, name: str,
    role: str = typer.Option("client", "--role", help="client, operator or admin."),
    expires_in: str = typer.Option("", "--expires-in", help="e.g. 30d, 12h; never when absent."),
    per_minute: int = typer.Option(0, "--per-minute", help="This key's own limit (with --per-hour)."),
    per_hour: int = typer.Option(0, "--per-hour"),
) -> None:
    """Make a key in main's store; it is printed once and never again."""
    st: _State = ctx.obj
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_in:
        body["expires_at"] = time.time() + _span_s(expires_in)
    if per_minute or per_hour:
        body["rate_limits"] = {"per_minute": per_minute, "per_hour": per_hour}
    r = _client(st).post("/api/keys", json=body)
    if st.as_json:
        _print_json(r)
        return
    typer.echo(f"key {r['name']} ({r['role']}): {r['key']}")
    typer.echo("store it now: main keeps only its hash and cannot show it again")


@keys_app.command("delete")
def keys_delete(ctx: typer.Context, name: str) -> None:
    """Delete a key made through the API (file and env keys change only in their file or env)."""
    st: _State = ctx.obj
    r = _client(st).request("DELETE", f"/api/keys/{name}")
    typer.echo(json.dumps(r) if st.as_json else f"key {name} deleted")


@keys_app.command("hash")
def keys_hash(
    name: str = typer.Argument(..., help="The key's name, shown in logs and metrics."),
    role: str = typer.Option("client", "--role", help="client, operator or admin."),
) -> None:
    """Print a new key and its entry for the keys file (config/api_keys.yaml); no main needed."""
    if role not in ("client", "operator", "admin"):
        raise typer.BadParameter(f"role {role!r}: use client, operator or admin")
    key = new_key()
    typer.echo(f"# the key (give it to its user; it is not stored anywhere): {key}")
    typer.echo(f"- {{name: {name}, role: {role}, sha256: {digest(key)}}}")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    session: str = typer.Option(None, "--session", help="Scope the token to this session id."),
    agent: str = typer.Option(None, "--agent", help="Scope the token to this agent."),
    ttl: int = typer.Option(None, "--ttl", help="Lifetime in seconds (default 600, at most 3600)."),
) -> None:
    """Mint a client token for a browser (use it as ?token= on /ws/voice, or as a Bearer token)."""
    st: _State = ctx.obj
    body = {k: v for k, v in {"session_id": session, "agent": agent, "ttl_s": ttl}.items() if v is not None}
    r = _client(st).post("/api/tokens", json=body)
    if st.as_json:
        _print_json(r)
        return
    typer.echo(r["token"])
    typer.echo(f"# jti {r['jti']}, expires in {r['expires_in']} s; revoke: sm token revoke {r['jti']}", err=True)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, jti: str) -> None:
    """Revoke a token by its jti (the key that minted it, or an admin); survives restarts."""
    st: _State = ctx.obj
    r = _client(st).request("DELETE", f"/api/tokens/{jti}")
    typer.echo(json.dumps(r) if st.as_json else f"token {jti} revoked")


def main() -> None:
    try:
        app()
    except MainUnreachable as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(3)
    except ApiError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
