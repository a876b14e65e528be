"""ASGI middleware that runs before Connexion routes a request."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from . import runtime
from .errors import BASE_PATH, ApiError

_UI = BASE_PATH + "/ui"


class RequestContext:
    """Binds the runtime, drops one trailing slash, and caps the request body.

    The trailing slash: the official billing client posts to `/api-keys/`; a redirect would lose a POST
    body, so the path is rewritten instead (Swagger UI's own `/ui/` paths are left alone).
    The body cap: checked on Content-Length up front and on the bytes actually received; both answer
    413 in the family's envelope. A chunked body (no Content-Length) is read here, under the cap, and
    replayed with its length, because Connexion's validation takes a body without a length for none.
    """

    def __init__(self, app: ASGIApp, runtime: runtime.Runtime):
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.endswith("/") and len(path) > len(BASE_PATH) + 1 and not path.startswith(_UI):
            scope = dict(scope, path=path[:-1], raw_path=scope.get("raw_path", b"").rstrip(b"/"))
        token = runtime.bind(self.runtime)
        try:
            receive = self._capped(scope, receive)
            if _is_chunked(scope):
                scope, receive = await _buffered(scope, receive)
            await self.app(scope, receive, send)
        finally:
            runtime.unbind(token)

    def _capped(self, scope: Scope, receive: Receive) -> Receive:
        limit = self.runtime.settings.max_body_bytes
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


def _is_chunked(scope: Scope) -> bool:
    names = {name for name, _ in scope["headers"]}
    return b"content-length" not in names and b"transfer-encoding" in names


async def _buffered(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [(n, v) for n, v in scope["headers"] if n != b"transfer-encoding"]
    headers.append((b"content-length", str(len(body)).encode()))
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return dict(scope, headers=headers), replay


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"The request body is larger than {limit} bytes.")
