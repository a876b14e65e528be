"""The app factory: the contract, its handlers, and one place where errors are dressed."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import yaml
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionRequest
from connexion.middleware import MiddlewarePosition
from connexion.resolver import Resolver
from starlette.exceptions import HTTPException

from .auth import extractors_by_operation
from .config import Settings
from .errors import ApiError, allowed_methods, from_problem, render
from .middleware import Observed, RequestContext, ResponseHeaders
from .permissions import Policy
from .ratelimit import RateLimiter
from .recorder import Recorder
from .runtime import Runtime
from .store.session import Store, database_unreachable
from .validation import VALIDATOR_MAP

log = logging.getLogger("keyhouse")

HANDLER_MODULES = ("keyhouse.api.cloud", "keyhouse.api.billing", "keyhouse.api.workspace", "keyhouse.api.native",
                   "keyhouse.api.operations")


def spec_path() -> Path:
    """The contract: shipped inside the wheel, or read from the source tree in a checkout."""
    packaged = Path(__file__).parent / "openapi" / "keyhouse.yaml"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "openapi" / "keyhouse.yaml"


def _snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def _handlers() -> dict[str, object]:
    """operationId `getUserApiKeys` is served by the function `get_user_api_keys` of one family module.

    The spec keeps client-friendly operationIds; a missing or doubly defined handler fails at startup.
    """
    table: dict[str, object] = {}
    for module_name in HANDLER_MODULES:
        module = importlib.import_module(module_name)
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module_name and not name.startswith("_"):
                if name in table:
                    raise RuntimeError(f"two handlers named {name}")
                table[name] = fn
    return table


class _Orjson:
    """orjson behind Connexion's Jsonifier: encoding a page of keys costs a fifth of the json module's."""

    @staticmethod
    def dumps(data, **_options) -> str:
        return orjson.dumps(data).decode()

    loads = staticmethod(orjson.loads)


# How Connexion serves the contract: every request and response validated, with the compiled validators.
# benchmarks/ceiling.py serves it the same way.
API_OPTIONS = {"strict_validation": True, "validate_responses": True, "pythonic_params": True,
               "validator_map": VALIDATOR_MAP, "jsonifier": Jsonifier(_Orjson)}

RETRY_AFTER_SECONDS = 5


def create_app(settings: Settings | None = None) -> AsyncApp:
    settings = settings or Settings.from_env()
    store = Store(settings.database_url)
    store.require_current()  # schema changes go through `keyhouse db upgrade`, never through a start
    spec = spec_path()
    document = yaml.safe_load(spec.read_text())
    limiter = RateLimiter(settings.rate_limit, settings.organization_rate_limit, settings.redis_url,
                          settings.refused_credential_limit)
    rt = Runtime(settings=settings, store=store, policy=Policy.from_spec(document), recorder=Recorder(store),
                 limiter=limiter, extractors=extractors_by_operation(document))

    @asynccontextmanager
    async def lifespan(_app):
        flusher = asyncio.create_task(rt.recorder.run())
        try:
            yield
        finally:
            flusher.cancel()
            rt.recorder.flush()

    handlers = _handlers()
    app = AsyncApp(__name__, specification_dir=str(spec.parent), lifespan=lifespan)
    app.add_api(spec.name, resolver=Resolver(function_resolver=lambda operation_id: handlers[_snake(operation_id)]),
                **API_OPTIONS)
    app.add_middleware(RequestContext, position=MiddlewarePosition.BEFORE_SWAGGER, runtime=rt)
    app.add_middleware(Observed, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(ResponseHeaders, position=MiddlewarePosition.BEFORE_CONTEXT)

    spec_paths = document["paths"]

    def dress(request: ConnexionRequest, error: ApiError):
        if error.kind == "method_not_allowed":
            error.headers["Allow"] = ", ".join(allowed_methods(spec_paths, request.url.path))
        return render(error, request.url.path)

    def on_api_error(request: ConnexionRequest, exc: ApiError):
        return dress(request, exc)

    def on_problem(request: ConnexionRequest, exc: ProblemException):
        return dress(request, from_problem(exc))

    def on_http_exception(request: ConnexionRequest, exc: HTTPException):
        problem = ProblemException(status=exc.status_code, detail=exc.detail, headers=exc.headers)
        return dress(request, from_problem(problem))

    def on_unexpected(request: ConnexionRequest, exc: Exception):
        if database_unreachable(exc):
            log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
            return dress(request, ApiError("unavailable", "The database is unreachable; try again shortly.",
                                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return dress(request, ApiError("internal", "An unexpected error occurred."))

    app.add_error_handler(ApiError, on_api_error)
    app.add_error_handler(ProblemException, on_problem)
    app.add_error_handler(HTTPException, on_http_exception)
    app.add_error_handler(Exception, on_unexpected)
    app.runtime = rt  # for the CLI and the tests
    return app
