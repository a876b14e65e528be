"""Middleware that guards an application with keyhouse, given the application's own OpenAPI document
(the one declared to keyhouse as `api`).

Each request is matched to its operation by method and path; an operation open to all (`security: []`)
passes, any other is verified for its operationId (`api` + `permissions: [operationId]`), with the
client's address, spending the operation's cost of the key's credits: its `x-keyhouse-cost` in the
document, or `costs={operationId: n}` given to the middleware, else 1 (0: free). The key is read where the
operation's security scheme says (an `apiKey` header, or `Authorization: Bearer`), or from the header
named to the middleware. A request that matches no operation is refused (404): what the document does
not declare is not guarded, so it is not served.

Refusals: 401 (no key, or one keyhouse does not accept), 403 (not from an allowed address, or not
permitted), 429 (rate limited, or out of credits; with `Retry-After` when keyhouse says when the key is
admitted again or its credits are refilled), 503 when keyhouse cannot answer;
a JSON body `{"error": code, "message": ...}` unless `on_refusal` shapes it. The verdict reaches the
handler: `request.state.keyhouse` (Starlette, FastAPI; `scope["state"]["keyhouse"]`), or
`environ["keyhouse.verdict"]` (WSGI: Flask's `request.environ`, Django's `request.META`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .client import AsyncKeyhouse, Keyhouse, KeyhouseUnavailable
from .verdict import Verdict

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    open: bool  # `security: []`: no key asked for
    header: str  # where its key is read: a header name, lower case
    bearer: bool  # the header is `Authorization: Bearer <key>`
    cost: int | None = None  # credits a call spends: None for keyhouse's default (1), 0 for free


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served, for `on_refusal` to shape: an HTTP status, a stable code (keyhouse's
    verdict code, or MISSING_KEY, UNKNOWN_OPERATION, UNAVAILABLE), a message, and headers to send."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    verdict: Verdict | None = None


def default_refusal(refusal: Refusal) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": refusal.code, "message": refusal.message}).encode()
    return refusal.status, {**refusal.headers, "Content-Type": "application/json"}, body


_BY_CODE = {  # verdict code -> (status, message)
    "NOT_FOUND": (401, "The API key is not valid."),
    "EXPIRED": (401, "The API key has expired."),
    "REVOKED": (401, "The API key has been revoked."),
    "FORBIDDEN": (403, "The API key may not be used from this address."),
    "INSUFFICIENT_PERMISSIONS": (403, "The API key is not permitted to call this operation."),
    "RATE_LIMITED": (429, "The API key's rate limit is spent."),
    "USAGE_EXCEEDED": (429, "The API key has no uses left."),
}


def refusal_of(verdict: Verdict) -> Refusal:
    status, message = _BY_CODE.get(verdict.code, (401, "The API key is not valid."))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if verdict.code in ("RATE_LIMITED", "USAGE_EXCEEDED") and verdict.retry_after is not None:
        headers["Retry-After"] = str(verdict.retry_after)
    return Refusal(status, verdict.code, message, headers, verdict)


def _template(path: str) -> re.Pattern:
    """An OpenAPI path template as a pattern: `{name}` is one path segment."""
    parts = re.split(r"(\{[^}/]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "/?")


class Operations:
    """The operations of an OpenAPI document (a dict, YAML or JSON text, or a file: a path is read relative
    to the working directory), found by method and path. Paths are read below the path of the document's
    first server (`base_path` says otherwise). An operation's cost is `costs[operationId]`, else its
    `x-keyhouse-cost`."""

    def __init__(self, document: dict | str | Path, *, header: str | None = None, base_path: str | None = None,
                 costs: dict[str, int] | None = None):
        if isinstance(document, Path) or (isinstance(document, str) and "\n" not in document):
            document = Path(document).read_text()
        spec: dict = yaml.safe_load(document) if isinstance(document, str) else document
        if base_path is None:
            servers = spec.get("servers") or [{"url": "/"}]
            base_path = urlsplit(servers[0]["url"]).path
        self.base_path = base_path.rstrip("/")
        schemes = (spec.get("components") or {}).get("securitySchemes") or {}
        default = spec.get("security")
        routes = []
        for path, item in (spec.get("paths") or {}).items():
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                security = op.get("security", default)
                where, bearer = _credential(security or [], schemes, header)
                cost = (costs or {}).get(op["operationId"], op.get("x-keyhouse-cost"))
                if cost is not None and (type(cost) is not int or cost < 0):
                    raise ValueError(f"the cost of {op['operationId']} is {cost!r}: a whole number, 0 or more")
                routes.append((path.count("{"), method.upper(), _template(self.base_path + path),
                               Operation(op["operationId"], security == [], where, bearer, cost)))
        # Concrete paths before templated ones (OpenAPI: `/users/me` wins over `/users/{id}`).
        self._routes = [(method, pattern, op) for _, method, pattern, op in sorted(routes, key=lambda r: r[0])]

    def find(self, method: str, path: str) -> Operation | None:
        method = "GET" if method == "HEAD" else method
        for wanted, pattern, operation in self._routes:
            if wanted == method and pattern.fullmatch(path):
                return operation
        return None


def _credential(security: list[dict], schemes: dict, header: str | None) -> tuple[str, bool]:
    """Where an operation's key is read: the header named to the middleware, else the first apiKey header
    or bearer scheme the operation accepts, else `Authorization: Bearer`."""
    if header is not None:
        return header.lower(), header.lower() == "authorization"
    for requirement in security:
        for name in requirement:
            scheme = schemes.get(name, {})
            if scheme.get("type") == "apiKey" and scheme.get("in") == "header":
                return scheme["name"].lower(), False
            if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
                return "authorization", True
    return "authorization", True


class _Guard:
    """What the ASGI and WSGI middleware share: the operation a request is, and its key."""

    def __init__(self, openapi: dict | str | Path, api: str, header: str | None,
                 on_refusal: Callable[[Refusal], tuple[int, dict[str, str], bytes]] | None,
                 costs: dict[str, int] | None = None):
        self.operations = Operations(openapi, header=header, costs=costs)
        self.api = api
        self.render = on_refusal or default_refusal

    def read(self, method: str, path: str, headers: Callable[[str], str | None]) -> tuple[Operation | None,
                                                                                            str | Refusal | None]:
        """(operation, its key) to verify; (operation, None) for an open one; or a refusal."""
        operation = self.operations.find(method, path)
        if operation is None:
            return None, Refusal(404, "UNKNOWN_OPERATION", "No operation of this API is at this path.")
        if operation.open:
            return operation, None
        value = headers(operation.header)
        if value and operation.bearer:
            scheme, _, value = value.partition(" ")
            value = value.strip() if scheme.lower() == "bearer" else ""
        if not value:
            return operation, Refusal(401, "MISSING_KEY", "An API key is required.", {"WWW-Authenticate": "Bearer"})
        return operation, value


_UNAVAILABLE = Refusal(503, "UNAVAILABLE", "Keys cannot be checked right now.", {"Retry-After": "1"})


class KeyhouseMiddleware:
    """ASGI middleware (Starlette, FastAPI): `app.add_middleware(KeyhouseMiddleware, keyhouse=AsyncKeyhouse(...),
    openapi="openapi.yaml", api="documents")`."""

    def __init__(self, app: Any, *, keyhouse: AsyncKeyhouse, openapi: dict | str | Path, api: str,
                 header: str | None = None, on_refusal: Callable[[Refusal], tuple[int, dict, bytes]] | None = None,
                 costs: dict[str, int] | None = None):
        self.app, self.keyhouse = app, keyhouse
        self.guard = _Guard(openapi, api, header, on_refusal, costs)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = scope.get("headers", ())

        def header(name: str) -> str | None:  # one header looked for: no dict of them all on every request
            wanted = name.encode("latin-1")
            return next((v.decode("latin-1") for k, v in raw if k.lower() == wanted), None)

        operation, found = self.guard.read(scope["method"], scope["path"], header)
        if isinstance(found, str) and operation is not None:
            client = scope.get("client")
            try:
                verdict = await self.keyhouse.verify(found, api=self.guard.api, permissions=[operation.operation_id],
                                                     cost=operation.cost, ip=client[0] if client else None)
            except KeyhouseUnavailable:
                return await self._refuse(_UNAVAILABLE, send)
            if not verdict.valid:
                return await self._refuse(refusal_of(verdict), send)
            scope.setdefault("state", {})["keyhouse"] = verdict
        elif isinstance(found, Refusal):
            return await self._refuse(found, send)
        await self.app(scope, receive, send)

    async def _refuse(self, refusal: Refusal, send: Callable) -> None:
        status, headers, body = self.guard.render(refusal)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in
                                _with_length(headers, body)]})
        await send({"type": "http.response.body", "body": body})


class KeyhouseWSGIMiddleware:
    """WSGI middleware (Flask: `app.wsgi_app = KeyhouseWSGIMiddleware(app.wsgi_app, ...)`; Django: wrap
    `get_wsgi_application()`), with the synchronous client."""

    def __init__(self, app: Callable, *, keyhouse: Keyhouse, openapi: dict | str | Path, api: str,
                 header: str | None = None, on_refusal: Callable[[Refusal], tuple[int, dict, bytes]] | None = None,
                 costs: dict[str, int] | None = None):
        self.app, self.keyhouse = app, keyhouse
        self.guard = _Guard(openapi, api, header, on_refusal, costs)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")

        def header(name: str) -> str | None:
            key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
            return environ.get(key)

        operation, found = self.guard.read(environ["REQUEST_METHOD"], path, header)
        if isinstance(found, str) and operation is not None:
            try:
                verdict = self.keyhouse.verify(found, api=self.guard.api, permissions=[operation.operation_id],
                                               cost=operation.cost, ip=environ.get("REMOTE_ADDR"))
            except KeyhouseUnavailable:
                return self._refuse(_UNAVAILABLE, start_response)
            if not verdict.valid:
                return self._refuse(refusal_of(verdict), start_response)
            environ["keyhouse.verdict"] = verdict
        elif isinstance(found, Refusal):
            return self._refuse(found, start_response)
        return self.app(environ, start_response)

    def _refuse(self, refusal: Refusal, start_response: Callable) -> list[bytes]:
        status, headers, body = self.guard.render(refusal)
        start_response(f"{status} {_REASONS.get(status, 'Refused')}", list(_with_length(headers, body)))
        return [body]


_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            503: "Service Unavailable"}


def _with_length(headers: dict[str, str], body: bytes) -> list[tuple[str, str]]:
    return [*headers.items(), ("Content-Length", str(len(body)))]
