"""Webhooks (issue 25): how long from a change's commit to its delivery at the endpoint.

    .venv/bin/python benchmarks/webhooks.py [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

One `keyhouse serve` (--workers 2), an endpoint in this process that checks every signature with the
standardwebhooks library and notes when each delivery arrived. Keys are made through the API at a steady
rate (--rate a second, --count in all); a key's commit is taken as the moment its 201 came back (the
transaction committed before the answer was sent, so this is later than the commit: the figures are, if
anything, short by the answer's way back, a fraction of a millisecond here). Goal: p95 <= 2 s.
Writes results/webhooks-<database>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from run import BIN, HERE, LIMITS, SECRET, Server, free_port
from standardwebhooks.webhooks import Webhook
from usage import _database, _fresh, _request

RESULTS = HERE / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a PostgreSQL URL (a schema is made in it); a SQLite file otherwise")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    args.work = Path(tempfile.mkdtemp(prefix="keyhouse-webhooks-"))
    arrived: dict[str, float] = {}  # key id -> when its key.created arrived
    secret: list[str] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            event = Webhook(secret[0]).verify(body, {k.lower(): v for k, v in self.headers.items()})
            arrived.setdefault(event["data"]["key_id"], time.monotonic())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    ThreadingHTTPServer.request_queue_size = 128  # the default backlog of 5 resets a burst of deliveries
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    url = _database(args, "webhooks")
    admin = _fresh(url)
    env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET,
           "KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}
    (args.work / "logs").mkdir()
    server = Server("webhooks", [str(BIN / "keyhouse"), "serve", "--workers", "2", "--allow-unshared-limits"], env,
                    2, port=free_port())
    load = os.getloadavg()
    server.start(args.work / "logs", admin["key"])
    committed: dict[str, float] = {}
    try:
        made = json.loads(_request(server, "POST", "/api/v1/webhooks", admin["key"], {
            "url": f"http://127.0.0.1:{endpoint.server_address[1]}/hook", "events": ["key.created"]})[1])
        secret.append(made["secret"])
        began = time.monotonic()
        for i in range(args.count):
            time.sleep(max(0.0, began + i / args.rate - time.monotonic()))
            key_id = json.loads(_request(server, "POST", "/api/v1/keys", admin["key"], {"name": f"w{i}"})[1])["id"]
            committed[key_id] = time.monotonic()
        deadline = time.monotonic() + 30
        while len(arrived) < args.count and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
        endpoint.shutdown()
    latencies = sorted((arrived[k] - committed[k]) * 1000 for k in committed if k in arrived)
    result = {"began": datetime.now(UTC).isoformat(timespec="seconds"), "load_before": load,
              "database": "postgresql" if args.database else "sqlite", "cpus": os.cpu_count(),
              "changes": args.count, "rate_per_second": args.rate, "delivered": len(latencies),
              "commit_to_delivery_ms": {"p50": round(statistics.median(latencies), 1),
                                        "p95": round(latencies[int(len(latencies) * 0.95) - 1], 1),
                                        "max": round(latencies[-1], 1)}}
    (RESULTS / f"webhooks-{result['database']}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if len(latencies) < args.count:
        sys.exit(f"{args.count - len(latencies)} changes were not delivered within 30 s")


if __name__ == "__main__":
    main()
