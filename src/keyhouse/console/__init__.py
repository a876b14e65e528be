"""The console: keyhouse for people, in the browser, under `/console`.

Server-rendered pages (Jinja2, `templates/`), made smoother by htmx (vendored and pinned, `static/`;
every page works without JavaScript). Served beside the Connexion app the way Swagger UI is: a
middleware that answers its own paths and passes every other request on. The pages act through the
operations' own handlers as the signed-in key (console.operations), so no rule of keyhouse lives here twice;
signing in is console.sessions.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import pages
from .rendering import HEADERS, HERE, render

PREFIX = "/console"

ROUTES = [
    Route("/sign-in", pages.sign_in_form, methods=["GET"]),
    Route("/sign-in", pages.sign_in, methods=["POST"]),
    Route("/sign-out", pages.sign_out, methods=["POST"]),
    Route("/keys", pages.keys, methods=["GET"]),
    Route("/keys", pages.create_key, methods=["POST"]),
    Route("/keys/new", pages.new_key, methods=["GET"]),
    Route("/keys/{key_id}", pages.key, methods=["GET"]),
    Route("/keys/{key_id}", pages.update_key, methods=["POST"]),
    Route("/keys/{key_id}/reroll", pages.reroll_key, methods=["POST"]),
    Route("/keys/{key_id}/revoke", pages.confirm_revoke, methods=["GET"]),
    Route("/keys/{key_id}/revoke", pages.revoke_key, methods=["POST"]),
    Route("/keys/{key_id}/revealed/{reveal_id}", pages.revealed, methods=["GET"]),
    Route("/find", pages.find_form, methods=["GET"]),
    Route("/find", pages.find_key, methods=["POST"]),
    Route("/rulesets", pages.rulesets, methods=["GET"]),
    Route("/audit", pages.audit, methods=["GET"]),
    Route("/apis", pages.apis, methods=["GET"]),
    Route("/webhooks", pages.webhooks, methods=["GET"]),
    Route("/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", pages.replay_delivery, methods=["POST"]),
]


class _Static(StaticFiles):
    """The console's scripts and styles, under the same policy as its pages (but cacheable)."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        for name, value in HEADERS.items():
            if name != "Cache-Control":
                response.headers[name] = value
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


async def _no_such_page(request: Request, exc: Exception) -> Response:
    """Every answer under /console is one of its pages, with its headers: an unknown path (404) or method
    (405, with `Allow`) too, never the framework's bare text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if status == 405:  # Starlette names the first route's methods only: every route of the path has its say
        scope = {**request.scope, "path": request.url.path[len(PREFIX):] or "/"}
        allowed = {m for route in ROUTES if route.matches(scope)[0] != Match.NONE for m in route.methods or ()}
        headers["Allow"] = ", ".join(sorted(allowed))
    return render(request, "missing.html", {"status": status}, status=status, headers=headers)


def _app() -> Starlette:
    return Starlette(routes=[Mount(PREFIX, routes=[*ROUTES, Mount("/static", _Static(directory=HERE / "static"),
                                                                  name="static")])],
                     exception_handlers={404: _no_such_page, 405: _no_such_page})


class Console:
    """Answers `/console` and below; every other request goes on to the API."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.pages = _app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        # What the access line and the metrics name the request by (Connexion's router names operations).
        scope["extensions"]["connexion_routing"] = {"operation_id": "console"}
        if path in (PREFIX, PREFIX + "/"):
            await RedirectResponse(PREFIX + "/keys", status_code=303, headers=HEADERS)(scope, receive, send)
            return
        await self.pages(scope, receive, send)
