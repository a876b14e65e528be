"""ASGI middleware around Connexion's: what every request gets, before it is routed."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs, metrics, runtime
from .errors import ApiError
from .leaks import SIGNED_BODY


class AccessLog:
    """The request id, the access log line and the request metrics, error responses included.

    Sits outside Connexion's exception handling, so it sees the status of every answer. The operation
    is known only after routing, further in: RequestContext shares Connexion's routing with the dict this
    one puts in the scope (logs.OBSERVED; scope copies share it), and auth notes the organization there.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = logs.request_id_from(dict(scope["headers"]).get(b"x-request-id"))
        token = logs.bind_request_id(request_id)
        observed = scope[logs.OBSERVED] = {"extensions": {}, "request_id": request_id, "organization_id": None}
        status, started = 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = _with_request_id(message, request_id)  # the error responses' (see ResponseHeaders)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            operation = logs.operation(observed)
            metrics.observe(operation, status, elapsed)
            client = scope.get("client")
            logs.access.info("request", extra={
                "method": scope["method"], "path": scope["path"], "status": status, "operation": operation,
                "organization_id": observed["organization_id"], "duration_ms": round(elapsed * 1000, 3),
                "client": client[0] if client else None})
            logs.unbind_request_id(token)


class ResponseHeaders:
    """Puts `X-Request-Id` on a handler's response before Connexion validates it: the spec declares the
    header required, and Connexion checks required headers where it validates responses, further in than
    AccessLog. (Error responses are made outside, and get it from AccessLog.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observed = scope.get(logs.OBSERVED)
        if observed is None:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = _with_request_id(message, observed["request_id"])
            await send(message)

        await self.app(scope, receive, send_with_id)


def _with_request_id(start: Message, request_id: str) -> Message:
    headers = start.get("headers", [])
    if any(name.lower() == b"x-request-id" for name, _ in headers):
        return start
    return {**start, "headers": [*headers, (b"x-request-id", request_id.encode())]}


class RequestContext:
    """Puts the app's runtime in the request's scope, drops one trailing slash, and caps the request body.

    The trailing slash: the official billing client posts to `/api-keys/`; a redirect would lose a POST
    body, so the path is rewritten instead (Swagger UI's own `/ui/` paths are left alone).
    The body cap: checked on Content-Length up front and on the bytes actually received; both answer
    413 in the family's envelope. An operation may allow more (`x-keyhouse-max-body-bytes`). A chunked
    body (no Content-Length) is read here, under the cap, and replayed with its length, because
    Connexion's validation takes a body without a length for none.
    """

    def __init__(self, app: ASGIApp, runtime: runtime.Runtime, base_path: str,
                 larger_bodies: dict[str, int] | None = None):
        self.app = app
        self.runtime = runtime
        self.base_path = base_path
        self.ui = base_path + "/ui"
        self.larger_bodies = larger_bodies or {}  # path -> its own cap, above the setting's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.endswith("/") and len(path) > len(self.base_path) + 1 and not path.startswith(self.ui):
            scope = dict(scope, path=path[:-1], raw_path=scope.get("raw_path", b"").rstrip(b"/"))
        # Connexion's router records the operation in scope["extensions"] of a shallow copy of this
        # scope: made here and shared with AccessLog's dict, the operation is visible on the way out.
        extensions = scope.setdefault("extensions", {})
        if logs.OBSERVED in scope:
            scope[logs.OBSERVED]["extensions"] = extensions
        scope = _media_type_in_lower_case(scope)
        runtime.attach(scope, self.runtime)
        receive = self._capped(scope, receive)
        if _is_chunked(scope):
            scope, receive = await _buffered(scope, receive)
        await self.app(scope, receive, send)

    def _capped(self, scope: Scope, receive: Receive) -> Receive:
        limit = max(self.runtime.settings.max_body_bytes, self.larger_bodies.get(scope["path"], 0))
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise ApiError("malformed_request", "The Content-Length header is not a number.") from None
                if declared > limit:
                    raise _too_large(limit)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
            return message

        return capped_receive


class SignedBodies:
    """Keeps the exact bytes of a signed operation's body for the security function that checks their
    signature (a leak report's: keyhouse.auth, keyhouse.leaks), and hands the body on unchanged.

    A signature covers bytes, not the JSON they parse to, and the security function runs before anything
    reads the body; so for the operations whose security scheme signs the body (`x-keyhouse-signed-body`
    in the contract) the body, already capped by RequestContext, is read here, kept in the scope, and
    replayed. Placed after routing (it needs the operation) and before security."""

    def __init__(self, app: ASGIApp, operations: frozenset[str]):
        self.app = app
        self.operations = operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routed = scope.get("extensions", {}).get("connexion_routing", {}).get("operation_id")
        if scope["type"] == "http" and routed in self.operations:
            body = scope[SIGNED_BODY] = await _whole_body(receive)
            receive = _replaying(body, receive)
        await self.app(scope, receive, send)


def _media_type_in_lower_case(scope: Scope) -> Scope:
    """`Content-Type: Application/JSON` is application/json (media type names are case-insensitive,
    RFC 9110 8.3.1). Connexion looks the declared body schema up by the exact name, and a spelling it
    does not find would skip validation; so the name is written in lower case before routing."""
    headers = scope["headers"]
    for i, (name, value) in enumerate(headers):
        if name == b"content-type":
            media_type, sep, parameters = value.partition(b";")
            if media_type != media_type.lower():
                headers = list(headers)
                headers[i] = (name, media_type.lower() + sep + parameters)
                return dict(scope, headers=headers)
    return scope


def _is_chunked(scope: Scope) -> bool:
    names = {name for name, _ in scope["headers"]}
    return b"content-length" not in names and b"transfer-encoding" in names


async def _whole_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over `body` whole, then whatever comes next (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _buffered(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    body = await _whole_body(receive)
    headers = [(n, v) for n, v in scope["headers"] if n != b"transfer-encoding"]
    headers.append((b"content-length", str(len(body)).encode()))
    return dict(scope, headers=headers), _replaying(body, receive)


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"The request body is larger than {limit} bytes.")
