"""Traces (issue 26): what OpenTelemetry costs verify, traced against untraced, side by side in one run.

    .venv/bin/python benchmarks/tracing.py [--sampler parentbased_traceidratio --sampler-arg 0.1]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/test --redis redis://127.0.0.1:6379]

The same build served twice (usage.side_by_side: one worker each, a database each made the same way, 500
keys verified in turn by wrk at 16 connections, ABBA rounds); the only difference is the OTEL_* variables of
the traced one, exporting over OTLP/HTTP to a collector in a process of its own (this file with
--collector: it decodes every export, counts the spans and answers 200, as a collector would). Both answer
the same shape (checked first). Reported: req/s, the ratio by round, the servers' CPU per request, and the
spans received per request traced. Goal: traced >= 0.95x untraced.
Writes results/tracing-<database>-<sampler>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from run import HERE, free_port
from usage import side_by_side

RESULTS = HERE / "results"


def collector(port: int) -> None:
    """An OTLP/HTTP receiver: counts the spans of every export; GET / answers the count."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse().SerializeToString()
    received = {"spans": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
            received["spans"] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            self._answer(answer, "application/x-protobuf")

        def do_GET(self):  # noqa: N802
            self._answer(json.dumps(received).encode(), "application/json")

        def _answer(self, body: bytes, media_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _spans(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as answer:
        return json.load(answer)["spans"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collector", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help="a PostgreSQL URL (schemas are made in it); SQLite files otherwise")
    parser.add_argument("--redis", help="a Redis URL both servers count rate limits in")
    parser.add_argument("--sampler", default="parentbased_always_on")
    parser.add_argument("--sampler-arg")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.collector:
        collector(args.collector)
        return
    args.work = Path(tempfile.mkdtemp(prefix="keyhouse-tracing-"))
    port = free_port()
    receiving = subprocess.Popen([sys.executable, __file__, "--collector", str(port)])
    time.sleep(1)
    shared = {"KEYHOUSE_REDIS_URL": args.redis} if args.redis else {}
    traced = {**shared, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_TRACES_SAMPLER": args.sampler,
              **({"OTEL_TRACES_SAMPLER_ARG": args.sampler_arg} if args.sampler_arg else {})}
    began, load = datetime.now(UTC).isoformat(timespec="seconds"), os.getloadavg()
    counted = {}

    def received(when: str):
        def read(*_):
            time.sleep(6)  # the batch processor exports every 5 s
            counted[when] = _spans(port)
        return read

    try:
        group, cpu, _ = side_by_side(args, {"traced": traced, "untraced": shared},
                                     f"verify of 500 keys in turn, 1 worker, sampler {args.sampler}",
                                     before_stop=received("after"), before_rounds=received("before"))
        spans = counted["after"] - counted["before"]
    finally:
        receiving.terminate()
    traced_requests = sum(r.rps * args.seconds for r in group.runs if r.variant == "traced")
    database = "postgresql" if args.database else "sqlite"
    result = {"began": began, "database": database, "redis": bool(args.redis), "sampler": args.sampler,
              "sampler_arg": args.sampler_arg, "load_before": load, "load_after": os.getloadavg(),
              "cpus": os.cpu_count(), "rounds": [r.__dict__ for r in group.runs],
              "traced_rps": group.median("traced"), "untraced_rps": group.median("untraced"),
              "ratio": round(group.ratio("traced", "untraced"), 3), "cpu_us_per_request": cpu,
              "cpu_ratio": round(cpu["untraced"] / cpu["traced"], 3),
              "spans_per_request": round(spans / traced_requests, 2) if traced_requests else None}
    name = f"tracing-{database}{'-redis' if args.redis else ''}-{args.sampler}{args.sampler_arg or ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result | {"rounds": "..."}, indent=1))


if __name__ == "__main__":
    main()
