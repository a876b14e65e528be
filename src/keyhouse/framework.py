"""Connexion 3.3 as keyhouse runs it: what Connexion redoes on every request, done once.

Measured (issue 16; `benchmarks/run --profile`), Connexion 3.3.0 spends 19-24% of its CPU per request on
work whose result never changes between requests:

1. `AsyncOperation.fn` builds a new `StarletteDecorator` on every request, whose wrapper builds a new URI
   parser and calls `decorate()`, which runs `inspect.signature` on the handler. `OnceAsyncApp` routes
   through operations that decorate their handler once, on their first request (the URI parser and
   decorators depend only on the operation, which is fixed per AsyncOperation).
2. The security layer calls `inspect.signature` twice per request (`_accepts_kwarg`, asking whether the
   security function takes `required_scopes` and `request`). `SECURITY_MAP` hands Connexion, through its
   public `security_map`, the same handlers with the answer memoized per function.
3. The Swagger UI middleware runs a Starlette router on every request to find the few it serves.
   `stack()` hands Connexion, through its public `middlewares=`, the default stack with Swagger UI
   reached only by requests for its own paths (the contract, and the UI).
4. The parameter decorator turns every parameter's name into a Python one on every request (`pythonic`:
   `inflection.underscore` and three regular expressions per name, 4.5% of a list request's CPU). The
   operations decorated once here use a parameter decorator that remembers each name's answer (bounded:
   a client may send names of its own).

Validation is untouched: every request and response is still validated against the contract.

These lean on Connexion's internals as 3.3 has them, so keyhouse pins `connexion==3.3.*`, and
`tests/test_framework.py` fails loudly when an upgrade changes any code overridden here (it hashes it).
docs/upstream/connexion-per-request-work.md (and its .patch) is the same change, written up for Connexion itself.
"""

from __future__ import annotations

import functools
import typing as t

from connexion.apps.asynchronous import AsyncApi, AsyncApp, AsyncASGIApp, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import AsyncParameterDecorator
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.security import SECURITY_HANDLERS, AbstractSecurityHandler


class _NamesOnce(AsyncParameterDecorator):
    """Connexion's parameter decorator, remembering what each parameter's name becomes in Python."""

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        convert: t.Callable[[str], str] = self.sanitize_fn  # type: ignore[has-type]
        self.sanitize_fn = functools.lru_cache(maxsize=1024)(convert)


class _DecorateOnce(StarletteDecorator):
    """Connexion's StarletteDecorator, building the URI parser and the decorated function on the first
    call only (Connexion's builds both on every request), with parameter names converted once."""

    @property
    def _parameter_decorator_cls(self) -> type[AsyncParameterDecorator]:
        return _NamesOnce

    def __call__(self, function: t.Callable) -> t.Callable:
        built: tuple | None = None

        @functools.wraps(function)
        async def wrapper(*_args, **_kwargs):
            nonlocal built
            if built is None:  # the operation's own parser and decorators: the same for every request
                built = (self.uri_parser, self.decorate(function))
            parser, decorated = built
            request = self.framework.get_request(uri_parser=parser, scope=scope, receive=receive)
            return await decorated(request)

        return wrapper


class _OnceOperation(AsyncOperation):
    @functools.cached_property
    def fn(self) -> t.Callable:  # Connexion's is a plain property: a new decorator per request
        return _DecorateOnce(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _OnceApi(AsyncApi):
    def make_operation(self, operation) -> AsyncOperation:
        return _OnceOperation.from_operation(operation, pythonic_params=self.pythonic_params,
                                             jsonifier=self.jsonifier)


class _OnceASGIApp(AsyncASGIApp):
    api_cls = _OnceApi


class OnceAsyncApp(AsyncApp):
    """Connexion's AsyncApp, with operations that decorate their handlers once."""

    def __init__(self, import_name: str, **kwargs: t.Any) -> None:
        super().__init__(import_name, **kwargs)
        # AsyncApp makes its inner app itself; the middleware reads it only when it builds its stack, at
        # the first request, so replacing it here (before any API is added) is replacing it everywhere.
        self._middleware_app = _OnceASGIApp()
        self.middleware.app = self._middleware_app


# ------------------------------------------------------------------ security: the signature asked once


@functools.cache
def _accepts_kwarg(func: t.Callable, keyword: str) -> bool:
    return _ORIGINAL_ACCEPTS_KWARG(func, keyword)


_ORIGINAL_ACCEPTS_KWARG = AbstractSecurityHandler._accepts_kwarg


def _memoized(handler: type[AbstractSecurityHandler]) -> type[AbstractSecurityHandler]:
    return type(handler.__name__, (handler,), {"_accepts_kwarg": staticmethod(_accepts_kwarg),
                                               "__doc__": f"{handler.__name__}, asking a function's "
                                                          "signature once (Connexion asks on every request)."})


SECURITY_MAP = {name: _memoized(handler) for name, handler in SECURITY_HANDLERS.items()}


# ------------------------------------------------------------------ Swagger UI: only on its own paths


class _SwaggerUIOnItsPaths(SwaggerUIMiddleware):
    """Connexion's SwaggerUIMiddleware, which routes every request to find the few it serves: here a
    request below no API's `openapi.*` or `ui` goes straight on."""

    def __init__(self, app) -> None:
        super().__init__(app)
        self._own: tuple[str, ...] = ()

    def add_api(self, specification, base_path: str | None = None, arguments: dict | None = None,
                **kwargs) -> None:
        super().add_api(specification, base_path=base_path, arguments=arguments, **kwargs)
        # Where the API was mounted (its base path, from the call or the spec's servers) and what lives there.
        self._own = tuple(f"{mount.path.rstrip('/')}/{name}" for mount in self.router.routes
                          for name in ("openapi.", "swagger.", "ui"))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(self._own):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def stack(*ours: tuple[str, t.Callable]) -> list:
    """The whole middleware stack, outermost first: Connexion's default one (Swagger UI on its own paths),
    with each of `ours` placed before the Connexion middleware its name gives. One list, read in one place
    (keyhouse.app), instead of positions spread over calls."""
    before: dict[str, list] = {}
    for place, middleware in ours:
        before.setdefault(place, []).append(middleware)
    names = {m.__name__ for m in ConnexionMiddleware.default_middlewares}
    if unknown := set(before) - names:
        raise RuntimeError(f"Connexion has no middleware {unknown} to place keyhouse's before: its stack changed")
    whole: list = []
    for middleware in ConnexionMiddleware.default_middlewares:
        whole += before.get(middleware.__name__, [])
        whole.append(_SwaggerUIOnItsPaths if middleware is SwaggerUIMiddleware else middleware)
    return whole
