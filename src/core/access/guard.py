"""The ASGI middleware in front of every route: who is calling, may they, how often, and how big.

For each HTTP request and WebSocket it

1. finds the route's rule (:mod:`core.access.policy`); public paths pass untouched;
2. when auth is on, reads the credential (``Authorization: Bearer``, ``X-API-Key``, and for a
   WebSocket, which a browser cannot give headers, ``?token=`` or ``?api_key=``) and turns it
   into a :class:`~core.access.principal.Principal`: 401 when missing, unknown, expired,
   tampered or revoked; 403 when the role is too low;
3. on rate-limited routes, takes one request from the caller's key and address budgets (429);
4. refuses a WebSocket from a foreign page (``Origin`` not this host nor in ``cors_origins``);
5. holds JSON bodies to ``max_json_bytes`` (413) and ``max_json_depth`` (400).

A refused WebSocket is closed with 1008 and the reason. The principal is left in
``scope["state"]["principal"]`` (``request.state.principal``) for the routes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.access.policy import Rule, app_routes, is_public, resolve
from core.access.principal import OPEN, Principal
from core.error_metrics import error_metrics
from core.errors import CallError, InvalidArgument, PermissionDenied, Unauthenticated, retry_after_header
from core.logs import caller_var

log = logging.getLogger("ultravox.access")
_OUTCOMES = {"UNAUTHENTICATED": "unauthenticated", "PERMISSION_DENIED": "forbidden",
             "RESOURCE_EXHAUSTED": "rate_limited"}
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def json_depth_ok(body: bytes | str, max_depth: int) -> bool:
    """Whether no array or object in ``body`` nests deeper than ``max_depth`` (strings skipped)."""
    depth, in_str, esc = 0, False, False
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def check_json_text(raw: str | bytes, max_depth: int, what: str = "the JSON body") -> None:
    """InvalidArgument when ``raw`` nests deeper than ``max_depth`` (before json.loads ever sees it)."""
    if not json_depth_ok(raw, max_depth):
        raise InvalidArgument(f"{what} nests deeper than {max_depth} levels (gateway.max_json_depth); flatten it")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def credential(scope: Scope) -> str:
    h = _headers(scope)
    auth = h.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if h.get("x-api-key"):
        return h["x-api-key"].strip()
    if scope["type"] == "websocket":
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return str((q.get("token") or q.get("api_key") or [""])[0])
    return ""


class AccessGuard:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = getattr(scope["app"].state, "access", None)
        if access is None:   # before the lifespan attached it: nothing is served yet anyway
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if is_public(path, access.config.auth.public_paths):
            await self.app(scope, receive, send)
            return
        rule, params = self._rule(scope)
        principal: Principal | None = None
        try:
            principal = self._authenticate(scope, access, rule, params)
            if scope["type"] == "websocket":
                self._check_origin(scope, access)
            if rule.limited:
                client = scope.get("client") or ("unknown", 0)
                key = principal.name if principal.via != "open" else None
                access.limiter.check(str(client[0]), key, access.key_limits(principal))
        except CallError as e:
            access.count(principal.label if principal is not None and principal.via != "open" else "-",
                         _OUTCOMES.get(e.code, "refused"))
            await self._refuse(scope, receive, send, e)
            return
        scope.setdefault("state", {})["principal"] = principal
        access.count(principal.label if principal.via != "open" else "-", "allowed")
        who = caller_var.set(principal.label if principal.via != "open" else "")
        try:
            if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH") and self._is_json(scope):
                await self._json_body(scope, receive, send, access)
                return
            await self.app(scope, receive, send)
        finally:
            caller_var.reset(who)

    # ---- steps --------------------------------------------------------------------------------
    def _rule(self, scope: Scope) -> tuple[Rule, dict[str, Any]]:
        app = scope["app"]
        table = getattr(app.state, "route_table", None)
        if table is None:   # built once, on the first request (every route is included by then)
            table = app.state.route_table = list(app_routes(app.router.routes))
        method = "WS" if scope["type"] == "websocket" else scope["method"]
        return resolve(table, method, scope["path"])

    def _authenticate(self, scope: Scope, access: Any, rule: Rule, params: dict[str, Any]) -> Principal:
        if not access.enabled:
            return OPEN
        given = credential(scope)
        if not given:
            raise Unauthenticated("this route needs an API key or a client token; send 'Authorization: Bearer "
                                  "<key or token>' (a WebSocket may use ?token=)")
        principal: Principal = access.authenticate(given)
        need = rule.role_for(params)
        if not principal.at_least(need):
            who = f"token of {principal.name!r}" if principal.via == "token" else f"key {principal.name!r}"
            log.info("%s %s refused: needs role %s, the %s has role %s", scope.get("method", "WS"), scope["path"],
                     need, who, principal.role)
            raise PermissionDenied(f"this route needs role {need}; the {who} has role {principal.role}")
        return principal

    def _check_origin(self, scope: Scope, access: Any) -> None:
        h = _headers(scope)
        origin = h.get("origin")
        if not origin:
            return   # not a browser
        parts = urlsplit(origin)
        if parts.netloc and parts.netloc == h.get("host", ""):
            return
        if origin in access.config.cors_origins:
            return
        raise PermissionDenied(
            f"pages from {origin[:100]} may not open this socket; add the origin to gateway.cors_origins"
        )

    @staticmethod
    def _is_json(scope: Scope) -> bool:
        ctype = _headers(scope).get("content-type", "").split(";")[0].strip().lower()
        return ctype == "application/json" or ctype.endswith("+json")

    async def _json_body(self, scope: Scope, receive: Receive, send: Send, access: Any) -> None:
        """Read the whole JSON body (up to the cap), check its depth, then replay it to the route."""
        cap, depth = access.config.max_json_bytes, access.config.max_json_depth
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await self._refuse(scope, receive, send, _TooLarge(int(declared), cap))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return   # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > cap:
                await self._refuse(scope, receive, send, _TooLarge(size, cap))
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json_text(body, depth)
        except CallError as e:
            await self._refuse(scope, receive, send, e)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: CallError) -> None:
        if scope["type"] == "websocket":
            # accept, then close: a close before accept reaches a browser as a bare failed handshake,
            # while 1008 with a reason tells the page what to fix
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                reason = err.message.encode()[:120].decode(errors="ignore")
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        rt = getattr(scope["app"].state, "runtime", None)
        if rt is not None:
            error_metrics(rt.ctx.registry).count("gateway", err.code)
        headers = [(b"content-type", b"application/json")]
        if retry := retry_after_header(err):
            headers.append((b"retry-after", retry.encode()))
        if err.http_status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="ultravox"'))
        body = json.dumps({"error": err.to_dict()}).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": err.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(InvalidArgument):
    http_status = 413

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"the JSON body is {size} bytes, over the {cap}-byte limit (gateway.max_json_bytes); "
                         "send less, or upload audio as multipart")
