"""Traces (keyhouse.tracing) as an operator gets them: `keyhouse serve` exporting over OTLP/HTTP to a receiver
of the test's own (decoded with opentelemetry-proto), and a guarded app's trace continued through
keyhouse-client into keyhouse."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler

from keyhouse import tracing
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse_client import Keyhouse
from tests.conftest import SECRET, database_url, migrated
from tests.helpers import API

REDIS_URL = os.environ.get("KEYHOUSE_TEST_REDIS_URL")


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it is sent, flattened, and the raw bodies."""

    def __init__(self):
        self.spans: list[dict] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.bodies.append(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append({
                                "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(), "kind": span.kind,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "service": resource.get("service.name")})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, found, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := found(self.spans):
                return result
            time.sleep(0.1)
        raise AssertionError(f"not received in {timeout} s; received: {[s['name'] for s in self.spans]}")


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def _traced(receiver, **environment) -> dict:
    """The environment of a traced `keyhouse serve` (two workers, Redis when the run has it)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "keyhouse-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100", **({"KEYHOUSE_REDIS_URL": REDIS_URL} if REDIS_URL else {}),
            **environment}


def _workers() -> list[str]:
    return ["--workers", "2"] + ([] if REDIS_URL else ["--allow-unshared-limits"])


def test_a_guarded_apps_trace_continues_into_keyhouse(receiver, served):
    """The app's span around keyhouse-client's verify is the parent of keyhouse's verifyKey span, which
    names the operation, family, status and organization; the database's statements (and Redis's commands,
    when the run has Redis) are its children; no key is in anything sent."""
    admin_key, start = served
    base = start(*_workers(), **_traced(receiver))
    made = httpx.post(f"{base}/keys", json={"name": "guarded"}, headers={"Authorization": f"Bearer {admin_key}"})
    key = made.json()["key"]
    app_tracer = TracerProvider().get_tracer("guarded-app")
    with Keyhouse(base, admin_key, caching=False) as keyhouse:
        with app_tracer.start_as_current_span("GET /documents/42") as app_span:
            verdict = keyhouse.verify(key)
    assert verdict.valid and verdict.organization_id
    ours = app_span.get_span_context()
    trace_id, parent = format(ours.trace_id, "032x"), format(ours.span_id, "016x")

    def verify_span(spans):
        return next((s for s in spans if s["trace_id"] == trace_id and s["name"] == "verifyKey"), None)

    span = receiver.wait_for(verify_span)
    assert span["parent_id"] == parent and span["kind"] == 2  # SPAN_KIND_SERVER
    assert span["service"] == "keyhouse-under-test"
    attributes = span["attributes"]
    assert (attributes["keyhouse.operation"], attributes["keyhouse.family"], attributes["http.response.status_code"]) \
        == ("verifyKey", "keyhouse", 200)
    assert attributes["keyhouse.organization_id"] == verdict.organization_id

    def children(system):
        def found(spans):
            return [s for s in spans
                    if s["parent_id"] == span["span_id"] and s["attributes"].get("db.system") == system]
        return found

    database = "postgresql" if os.environ.get("KEYHOUSE_TEST_POSTGRES_URL") else "sqlite"
    assert receiver.wait_for(children(database))
    assert not [s for s in receiver.spans if s["name"] == "connect"]  # a pool checkout is no span of its own
    if REDIS_URL:
        assert receiver.wait_for(children("redis"))
    for secret in (key, admin_key):
        assert not any(secret.encode() in body for body in receiver.bodies)


def test_every_log_line_of_a_request_names_its_trace(receiver, served):
    """A caller's `traceparent` by hand: the request's access line names that trace and keyhouse's span."""
    admin_key, start = served
    base = start(**_traced(receiver))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    answer = httpx.get(f"{base}/user/api-keys", headers={
        "Authorization": f"Bearer {admin_key}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    server_span = receiver.wait_for(
        lambda spans: next((s for s in spans if s["trace_id"] == trace_id and s["kind"] == 2), None))
    log = [json.loads(line) for line in start.log_of(base).read_text().splitlines() if line.startswith("{")]
    lines = [line for line in log if line.get("request_id") == request_id]
    assert lines and all(line["trace_id"] == trace_id for line in lines), log[-5:]
    assert {line["span_id"] for line in lines} == {server_span["span_id"]}
    assert all("trace_id" in line for line in log)  # every line has the field, null outside a request


class _Counting(Sampler):
    """A parent-based sampler that samples nothing on its own and counts every span it is asked about."""

    def __init__(self):
        self.asked: list[str] = []
        self._inner = ParentBased(ALWAYS_OFF)

    def should_sample(self, parent_context, trace_id, name, *args, **kwargs):
        self.asked.append(name)
        return self._inner.should_sample(parent_context, trace_id, name, *args, **kwargs)

    def get_description(self) -> str:
        return "counting"


def test_under_a_request_sampled_out_the_database_makes_no_span(tmp_path):
    """The suppression's proof: under a request its sampler leaves out, the SQLAlchemy instrumentation
    starts no span at all (the sampler is asked once, for the request); a caller's sampled trace still gets
    its statements. (Without suppression each statement would ask the sampler, and be dropped there.)"""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from starlette.testclient import TestClient

    sampler, exported = _Counting(), InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    settings = Settings(database_url=migrated(database_url(tmp_path)), secret=SECRET, webhook_sending=False)
    app = create_app(settings, tracing.Tracing(provider))
    try:
        with TestClient(app) as client:
            sampler.asked.clear()
            assert client.get(f"{API}/readyz").status_code == 200  # reads the database
            unsampled = list(sampler.asked)
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            assert client.get(f"{API}/readyz", headers={"traceparent": traceparent}).status_code == 200
    finally:
        SQLAlchemyInstrumentor().uninstrument()
    assert unsampled == ["GET"], unsampled
    spans = exported.get_finished_spans()
    (request,) = [s for s in spans if s.name == "getReadiness"]
    assert [s for s in spans if s.parent and s.parent.span_id == request.context.span_id
            and s.attributes.get("db.system")], [s.name for s in spans]


@pytest.mark.parametrize(("environment", "wanted"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_traces_are_wanted_only_when_the_environment_asks(environment, wanted):
    assert tracing.wanted(environment) is wanted
