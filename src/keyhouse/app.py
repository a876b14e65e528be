"""The app factory: the contract, the handlers that serve it, and the middleware around them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import logging
from contextlib import asynccontextmanager

import orjson
from connexion.jsonifier import Jsonifier
from connexion.resolver import Resolver
from sqlalchemy.engine import make_url

from . import spec, tracing
from .api import HANDLERS, handed
from .auth import extractors_by_operation, signed_operations
from .changes import ChangeSignal, notify_on_commit, probe_through
from .config import Settings
from .console import Console
from .errors import ErrorEnvelopes
from .framework import SECURITY_MAP, OnceAsyncApp, stack
from .leaks import load_github_keys
from .middleware import AccessLog, RequestContext, ResponseHeaders, SignedBodies
from .permissions import Policy
from .ratelimit import RateLimiter
from .recorder import Recorder
from .runtime import Runtime
from .store.session import Store
from .validation import VALIDATOR_MAP
from .webhooks import Sealer, Webhooks

log = logging.getLogger("keyhouse")


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


def check_handlers(document: dict) -> None:
    """Every operation of the spec has exactly one handler in api.HANDLERS, and every handler an operation."""
    operation_ids = [operation["operationId"] for _, _, operation in spec.operations(document)]
    unserved = sorted(set(operation_ids) - set(HANDLERS))
    unused = sorted(set(HANDLERS) - set(operation_ids))
    doubled = sorted({name for name in operation_ids if operation_ids.count(name) > 1})
    shared = sorted({fn.__name__ for fn in HANDLERS.values() if list(HANDLERS.values()).count(fn) > 1})
    if unserved or unused or doubled or shared:
        raise RuntimeError(f"operations without a handler: {unserved}; handlers without an operation: {unused}; "
                           f"operationIds used twice: {doubled}; handlers serving two operations: {shared}")


def served() -> OnceAsyncApp:
    """The app of one `keyhouse serve` worker (uvicorn's factory, called in each worker process): the
    environment's settings, and traces when the OTEL_* variables ask for them (set up here, after the
    fork: the exporter's thread does not cross one)."""
    return create_app(Settings.from_env(), tracing.start())


def create_app(settings: Settings | None = None, traces: tracing.Tracing | None = None) -> OnceAsyncApp:
    """The app, on these settings (the environment's unless given), traced when given a Tracing."""
    settings = settings or Settings.from_env()
    store = Store(settings.database_url, pool_size=settings.database_pool_size,
                  max_overflow=settings.database_max_overflow,
                  prepared_statements=settings.database_prepared_statements)
    store.require_current()  # schema changes go through `keyhouse db upgrade`, never through a start
    notify_on_commit(store)
    document = spec.document()
    check_handlers(document)
    limiter = RateLimiter(settings.rate_limit, settings.organization_rate_limit, settings.redis_url,
                          settings.refused_credential_limit, settings.verified_key_rate_limit)
    rt = Runtime(settings=settings, store=store, policy=Policy.from_spec(document),
                 recorder=Recorder(store, count_usage=settings.usage_counting),
                 limiter=limiter, changes=ChangeSignal(make_url(settings.listen_url or settings.database_url),
                                                       probe_through(store), store),
                 extractors=extractors_by_operation(document),
                 github_keys=load_github_keys(settings.github_secret_scanning_keys),
                 webhooks=Webhooks(store, Sealer((settings.secret, *settings.previous_secrets)),
                                   settings.webhook_allow_private_addresses))

    @asynccontextmanager
    async def lifespan(_app):
        # The background work (tasks copy this context): traced, it would start a root trace of its own
        # every few seconds per worker, statements outside any request.
        untraced = traces.untraced if traces is not None else contextlib.nullcontext
        with untraced():
            flusher = asyncio.create_task(rt.recorder.run())
            pruner = asyncio.create_task(rt.recorder.prune(settings.audit_retention, settings.usage_retention_days))
            clock = asyncio.create_task(rt.store.keep_time())
            sender = asyncio.create_task(rt.webhooks.run()) if settings.webhook_sending else None
        # What start-up built (the contract, its validators, the routes: hundreds of thousands of objects)
        # lives as long as the process: out of the collector's way, so that its full collections, which
        # otherwise walk all of it, stop stalling requests (p99 of the billing list on PostgreSQL at 16
        # connections: 126 ms before, 64 ms after). Once per process: what a later app (a test's) leaves
        # behind must stay collectable.
        if not gc.get_freeze_count():
            gc.freeze()
        await rt.store.open_on_loop()
        if traces is not None:  # after open_on_loop: the loop's engine exists from then on
            traces.instrument(rt.store.engines(), redis=settings.redis_url is not None)
        with untraced():
            await rt.changes.start()
        try:
            yield
        finally:
            flusher.cancel()
            pruner.cancel()
            clock.cancel()
            if sender is not None:
                sender.cancel()
            await rt.changes.stop()
            rt.recorder.flush()
            await rt.store.close_on_loop()
            if traces is not None:
                traces.shutdown()

    base_path = spec.base_path(document)
    # The few operations that take more than KEYHOUSE_MAX_BODY_BYTES (a leak report of 1,000 tokens), by path.
    larger = {base_path + path: op["x-keyhouse-max-body-bytes"] for _, path, op in spec.operations(document)
              if "x-keyhouse-max-body-bytes" in op and "{" not in path}
    request_context = functools.partial(RequestContext, runtime=rt, base_path=base_path, larger_bodies=larger)
    # Every middleware, each before the Connexion one it names (outermost first): the order is this list.
    families = {op["operationId"]: spec.family(document, op)[0] for _, _, op in spec.operations(document)}
    middlewares = stack(
        # The request's span around everything else, so that every log line of the request names its trace.
        *([("ExceptionMiddleware", traces.middleware(families))] if traces is not None else []),
        # Outside Connexion's exception handling, so that it sees the status of every answer, errors too.
        ("ExceptionMiddleware", AccessLog),
        # Binds the runtime and rewrites a trailing slash and caps the body before anything routes or reads.
        ("SwaggerUIMiddleware", request_context),
        # The console answers /console itself (its own pages, its own errors); every other path goes on.
        ("SwaggerUIMiddleware", Console),
        # The exact bytes of a signed body, for the security function that checks the signature.
        ("SecurityMiddleware", functools.partial(SignedBodies, operations=signed_operations(document))),
        # X-Request-Id on a handler's response before Connexion validates it (the spec requires it).
        ("ContextMiddleware", ResponseHeaders),
    )
    app = OnceAsyncApp(__name__, specification_dir=str(spec.path().parent), lifespan=lifespan,
                       middlewares=middlewares, security_map=SECURITY_MAP)
    # Connexion keeps (and resolves) a copy of its own: the shared document stays as it was read.
    app.add_api(copy.deepcopy(document), resolver=Resolver(function_resolver=lambda name: handed(rt, HANDLERS[name])),
                **API_OPTIONS)
    for exception, handler in ErrorEnvelopes(document).handlers():
        app.add_error_handler(exception, handler)
    app.runtime = rt  # for the CLI and the tests
    return app
