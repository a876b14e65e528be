"""Load and faults, as scripted checks (too long for CI; run them before a release).

    .venv/bin/python benchmarks/load.py                  # 60 s at 32 connections: zero 5xx, zero errors logged
    .venv/bin/python benchmarks/load.py --restart-database postgresql+psycopg://postgres@127.0.0.1:5432/test
        # the same load on PostgreSQL while a stream of creates runs and the database is restarted
        # (pg_ctlcluster, as root): 503s while it is down, full service after, no acknowledged key lost

Each check prints what it saw and exits non-zero when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from run import BIN, LIMITS, Server, free_port

MIXED = """
local n = 0
request = function()
  n = n + 1
  local k = n % 3
  if k == 0 then
    return wrk.format("GET", "/api/v1/api-keys?limit=20", {{["REB-APIKEY"] = "{key}"}})
  elseif k == 1 then
    return wrk.format("POST", "/api/v1/keys/verify", {{["Authorization"] = "Bearer {key}",
      ["Content-Type"] = "application/json"}}, '{{"key": "{key}"}}')
  end
  return wrk.format("GET", "/api/v1/users/auth/keys", {{["Authorization"] = "ApiKey {key}"}})
end
"""


def call(base: str, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict | None]:
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"REB-APIKEY": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None  # no answer at all: nothing was acknowledged


def errors_logged(log: Path) -> list[dict | str]:
    """The log's error lines, read as JSON (as the server writes them, in whatever spacing its encoder
    uses): entries at ERROR or above or answering 5xx, and any line that is not JSON (a raw traceback)."""
    bad: list[dict | str] = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(line)  # not a JSON line: a traceback printed raw, say
            continue
        if entry.get("level") in ("ERROR", "CRITICAL") or (entry.get("status") or 0) >= 500:
            bad.append(entry)
    return bad


def documented_outage(entry: dict | str) -> bool:
    """A line an outage of the database is documented to log: a 503 answered, or the database unreachable."""
    return isinstance(entry, dict) and (entry.get("status") == 503 or "database unreachable" in
                                        str(entry.get("message", "")) + str(entry.get("exc_info", "")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restart-database", metavar="POSTGRESQL_URL",
                        help="run on this PostgreSQL and restart it (pg_ctlcluster) halfway through")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keyhouse-load-"))
    url = f"sqlite:///{work}/keyhouse.db"
    if args.restart_database:
        from sqlalchemy import create_engine, text

        schema = f"load_{os.getpid()}"
        with create_engine(args.restart_database).begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{args.restart_database}?options=-csearch_path%3D{schema}"
    env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET_FILE": str(work / "secret")}
    boot = subprocess.run([str(BIN / "keyhouse"), "bootstrap", "--organization", "load", "--email", "load@load.test"],
                          env=env, capture_output=True, text=True, check=True)
    key = json.loads(boot.stdout.strip().splitlines()[-1])["key"]
    serve = [str(BIN / "keyhouse"), "serve", "--workers", str(args.workers), "--allow-unshared-limits"]
    server = Server("keyhouse", serve, env, args.workers, port=free_port())
    server.start(work, key)
    base = server.url("/api/v1")
    script = work / "mixed.lua"
    script.write_text(MIXED.format(key=key))
    failures = []
    try:
        acknowledged, statuses, stop = [], {}, threading.Event()

        def creates() -> None:  # a stream of writes beside the load, to check that none acknowledged is lost
            while not stop.is_set():
                status, body = call(base, "POST", "/api-keys", key, {"description": "under load"})
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    acknowledged.append((body["id"], body["secretKey"]))

        writer = threading.Thread(target=creates)
        writer.start()
        argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(script),
                server.url("/")]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if args.restart_database:
            time.sleep(args.seconds / 3)
            version = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout.split()[0]
            print(f"restarting PostgreSQL {version} under load", flush=True)
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
        out = load.communicate()[0]
        stop.set()
        writer.join()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
        print(f"load: {rps:,.0f} req/s for {args.seconds} s at {args.connections} connections, {args.workers} "
              f"workers; non-2xx: {non_2xx}; creates beside it: {statuses}")

        deadline = time.monotonic() + 30
        while call(base, "GET", "/readyz", key)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        lost = [key_id for key_id, secret in acknowledged
                if call(base, "GET", f"/api-keys/{key_id}", key)[0] != 200
                or call(base, "GET", "/api-keys?limit=1", secret)[0] != 200]
        print(f"acknowledged creates: {len(acknowledged)}; lost or not authenticating: {len(lost)}")
        if lost:
            failures.append(f"{len(lost)} acknowledged keys lost")
        logged = errors_logged(server.log)
        five_xx = sum(1 for s in statuses if s >= 500 and s != 503)
        if args.restart_database:
            # While the database is down requests get 503 (documented, with Retry-After), never another 5xx.
            unexpected = [entry for entry in logged if not documented_outage(entry)]
            if unexpected or five_xx:
                failures.append(f"{len(unexpected)} unexpected error lines; {five_xx} non-503 5xx")
        else:
            if non_2xx or logged or five_xx or statuses.keys() - {201}:
                failures.append(f"non-2xx {non_2xx}, error lines {len(logged)}, create statuses {statuses}")
        shown = [entry for entry in logged if not documented_outage(entry)] or logged
        for entry in shown[:5]:
            print("  logged:", (entry if isinstance(entry, str) else json.dumps(entry))[:600])
    finally:
        server.stop()
    print("FAILED: " + "; ".join(failures) if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
