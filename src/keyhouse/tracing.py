"""OpenTelemetry traces, when a deployment asks for them: the `otel` extra installed and the standard `OTEL_*`
variables set (an exporter or an OTLP endpoint). Nothing here runs otherwise: no middleware, no log field.

What a trace holds: a SERVER span per request (ServerSpans), named by its operationId once routed, with the
family, the status and the organization, never a key; the database's statements and Redis's commands as its
children (OpenTelemetry's SQLAlchemy and Redis instrumentations); a caller's W3C `traceparent` continued
(keyhouse-client sends it). Every JSON log line carries the trace and span ids (TraceIds).

Set up per worker process, after uvicorn has started it (`keyhouse.app.served`): a BatchSpanProcessor's
thread does not survive a fork.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.engine import Engine

log = logging.getLogger("keyhouse.tracing")

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an exporter named (other than `none`) or an OTLP endpoint
    set, and the SDK not disabled (OTEL_SDK_DISABLED)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if exporters:
        return exporters != {"none"}
    return any(env.get(name) for name in _ENDPOINTS)


def start() -> Tracing | None:
    """This process's tracing, when wanted and the extra is installed (else None, with a warning when the
    extra is what is missing)."""
    if not wanted():
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: F401
    except ImportError:
        log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed: pip install "
                    "'keyhouse[otel]'; serving without traces")
        return None
    return Tracing(_provider())


def _provider() -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "keyhouse"}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER (parent-based, always on)
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()}
    for name in sorted(exporters - {"none"}):
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not one keyhouse sends to (otlp, console); left out", name)
    return provider


def _otlp_exporter() -> Any:
    # OTLP over HTTP with protobuf, configured by the OTLP exporter variables (endpoint, headers, timeout, ...).
    # gRPC would bring grpcio (tens of MB) into every image for the same spans.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; sending http/protobuf", protocol)
    return OTLPSpanExporter()


class Tracing:
    """One process's tracer provider, and what the app wires with it."""

    def __init__(self, provider: TracerProvider):
        self.provider = provider
        self._instrumented = False

    def middleware(self, families: dict[str, str]) -> Any:
        """ServerSpans for this provider, for the middleware stack (which hands it the app it wraps)."""
        return functools.partial(ServerSpans, provider=self.provider, families=families)

    def instrument(self, engines: Iterable[Engine], redis: bool) -> None:
        """Child spans: the statements of these engines, and (when the app uses Redis) redis-py's commands.
        Once per process (both instrumentors patch classes, process-wide)."""
        if self._instrumented:
            return
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # skip_dep_check: the instrumentation declares sqlalchemy < 2.1, and works on 2.1 (tests/test_tracing.py
        # checks its spans arrive).
        SQLAlchemyInstrumentor().instrument(engines=list(engines), tracer_provider=self.provider,
                                            skip_dep_check=True)
        # Its "connect" span wraps every Engine.connect, which is a checkout from the pool, not a connection
        # made: one per unit of work beside its statements, each costing what a span costs (benchmarks/
        # tracing.py): the statements' spans are kept, that one is not.
        from opentelemetry.instrumentation.utils import unwrap
        from sqlalchemy.engine import Engine

        unwrap(Engine, "connect")
        if redis:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=self.provider)
        self._instrumented = True

    def untraced(self) -> AbstractContextManager:
        """What runs in this context, and the tasks and threads started from it, makes no span."""
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        return suppress_instrumentation()

    def shutdown(self) -> None:
        """Send what is batched (at a worker's end)."""
        self.provider.shutdown()


class ServerSpans:
    """A SERVER span around each HTTP request: the caller's trace continued when it sends one.

    Not OpenTelemetry's ASGI middleware: that one computes a dozen attributes, wraps receive and send, and
    records duration histograms for every request, sampled or not (measured: traced at 1 in 10 it cost as
    much as every request traced should). This one asks the sampler first; under a request it samples out,
    the database's and Redis's instrumentations are suppressed, so they make no span at all for it (the
    samplers are parent-based: a child of an unsampled request would not be recorded anyway).
    Named by its operationId when the response starts, from what AccessLog and auth observed (logs.OBSERVED):
    the span ends with the last byte of the body, and a name set after it is ignored.
    """

    def __init__(self, app: ASGIApp, provider: TracerProvider, families: dict[str, str]):
        from opentelemetry import trace
        from opentelemetry.instrumentation.utils import suppress_instrumentation
        from opentelemetry.propagate import get_global_textmap
        from opentelemetry.trace import Status, StatusCode

        self.app = app
        self.tracer = provider.get_tracer("keyhouse")
        self.propagator = get_global_textmap()  # OTEL_PROPAGATORS: W3C trace context and baggage by default
        self.fields = {name.encode() for name in self.propagator.fields}
        self.families = families
        self._server = trace.SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._suppressed = suppress_instrumentation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carried = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in self.fields}
        parent = self.propagator.extract(carried) if carried else None
        with self.tracer.start_as_current_span(
                scope["method"], context=parent, kind=self._server,
                attributes={"http.request.method": scope["method"], "url.path": scope["path"],
                            "url.scheme": scope.get("scheme", "http")}) as span:
            if not span.is_recording():
                with self._suppressed():
                    await self.app(scope, receive, send)
                return

            async def send_described(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(self._error)
                    observed = scope.get(logs.OBSERVED)
                    operation = logs.operation(observed) if observed else None
                    if operation:
                        span.update_name(operation)
                        span.set_attribute("keyhouse.operation", operation)
                        span.set_attribute("keyhouse.family", self.families[operation])
                    if observed and observed.get("organization_id"):
                        span.set_attribute("keyhouse.organization_id", observed["organization_id"])
                await send(message)

            await self.app(scope, receive, send_described)


class TraceIds(logging.Filter):
    """The current trace and span ids on every log record (logs.config adds this filter, and the two
    fields, only when traces are wanted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True
