"""Usage (issue 25): what counting every verdict costs verify, and how fast usage is read at a million keys.

    .venv/bin/python benchmarks/usage.py [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

1. Throughput, counting on against off, side by side in one interleaved run: the same build, one worker
   each, each on a database of its own made the same way (an organization, its admin's key and 500 keys
   made through the API); wrk at 16 connections sends `POST /keys/verify` for the 500 keys in turn, so every
   request is two verdicts counted (the gateway's key, and the key verified) over 501 keys' rows. The only
   difference between the two is KEYHOUSE_USAGE_COUNTING=false. Both answer the same bytes (checked first).
   Goal: counting on >= 0.95x off. Rounds go ABBA (the order within a round moved req/s by several percent
   here), and the servers' CPU per request (from /proc, flushes included) is reported beside req/s: the
   steadier of the two on a machine where req/s moves by a tenth from run to run.
2. Reads at 1,000,000 keys: a database of a million keys (`keyhouse keys load`), each with a day of usage,
   and 100 of them with 30 days of usage (rows written as the recorder writes them, by
   keyhouse.store.usage.count_verdicts); `GET /usage?key_id=` x 100 at day granularity over 30 days, asked
   again and again through HTTP; goal <= 100 ms. Also one key's `GET /keys/{key_id}/usage`.

Writes results/usage-<database>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from guard import cpu_seconds
from run import BIN, HERE, LIMITS, SECRET, VERIFY_PATH, Group, Run, Server, _ms, dataset, free_port, keyhouse_cli

RESULTS = HERE / "results"
KEYS = 500


def _request(server: Server, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url(path), data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return answer.status, answer.read()


def _fresh(url: str) -> dict:
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET}
    subprocess.run([str(BIN / "keyhouse"), "db", "upgrade"], env=env, check=True, capture_output=True)
    return keyhouse_cli(env, "bootstrap", "--organization", "usage-bench", "--email", "admin@usage.bench")


def _database(args, name: str) -> str:
    if not args.database:
        return f"sqlite:///{args.work}/{name}.db"
    from sqlalchemy import create_engine, text

    schema = f"keyhouse_usage_{name}"
    with create_engine(args.database).begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    return f"{args.database}?options=-csearch_path%3D{schema}"


def _wrk(server: Server, keys: list[str], admin: str, args, round_: int, label: str) -> Run:
    names = ", ".join(f'"{k}"' for k in keys)
    script = args.work / f"{label}.lua"
    script.write_text(f"""
local keys = {{{names}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "{VERIFY_PATH}", {{["Authorization"] = "Bearer {admin}",
    ["Content-Type"] = "application/json"}}, '{{"key": "' .. keys[n % #keys + 1] .. '"}}')
end
""")
    pids = server.workers_pids()
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(script),
                          server.url(VERIFY_PATH)], check=True, capture_output=True, text=True).stdout
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    if non_2xx:
        raise SystemExit(f"{label} answered {non_2xx} non-2xx; see {server.log}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    run = Run(label, "verify", round_, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              _ms(re.search(r"\s50%\s+(\S+)", out).group(1)), _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
              0, 0, 0.0)
    run.cpu_us = round(cpu / requests * 1e6, 1)  # the server's CPU per request, flushes included
    return run


def side_by_side(args, variants: dict[str, dict], title: str, before_stop=None,
                 before_rounds=None) -> tuple[Group, dict, object]:
    """The same build served once per variant (its extra environment), one worker each, each on a database of
    its own made the same way (an organization, its admin's key and 500 keys made through the API); wrk sends
    `POST /keys/verify` for the 500 keys in turn, in ABBA rounds. Both answer the same shape (checked first).
    Returns the runs, each variant's median CPU per request, and what `before_stop(servers, admins)` read
    (`before_rounds()` is called once the servers are warm)."""
    servers, keys, admins = {}, {}, {}
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    read = None
    try:
        for label, extra in variants.items():
            url = _database(args, label.replace(" ", "_"))
            admin = _fresh(url)
            env = {**os.environ, **LIMITS, **extra, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET}
            server = Server(label.replace(" ", "-"), [str(BIN / "keyhouse"), "serve", "--workers", "1"], env, 1,
                            port=free_port())
            server.start(logs, admin["key"])
            servers[label], admins[label] = server, admin["key"]
            keys[label] = [json.loads(_request(server, "POST", "/api/v1/keys", admin["key"], {"name": f"k{i}"})[1])
                           ["key"] for i in range(KEYS)]
        answers = {label: json.loads(_request(server, "POST", VERIFY_PATH, admins[label],
                                              {"key": keys[label][0]})[1]) for label, server in servers.items()}
        shapes = [sorted(a) + [a["code"]] for a in answers.values()]
        assert all(shape == shapes[0] for shape in shapes), shapes
        for label, server in servers.items():  # warm
            args_warm = argparse.Namespace(**{**vars(args), "seconds": 2})
            _wrk(server, keys[label], admins[label], args_warm, -1, label)
        group = Group(title, "verify", list(variants))
        if before_rounds is not None:
            before_rounds()
        for round_ in range(args.rounds):
            # ABBA: each variant goes first in every other round, so that going first or second (measured
            # to move req/s by several percent here) weighs on both alike.
            for label in group.variants if round_ % 2 == 0 else reversed(group.variants):
                run = _wrk(servers[label], keys[label], admins[label], args, round_, label)
                group.runs.append(run)
                print(f"  round {round_ + 1}: {label}: {run.rps:,.0f} req/s, p99 {run.p99_ms:.1f} ms, "
                      f"{run.cpu_us:.0f} us of CPU a request", file=sys.stderr, flush=True)
        if before_stop is not None:
            read = before_stop(servers, admins)
    finally:
        for server in servers.values():
            server.stop()
    cpu = {label: statistics.median(r.cpu_us for r in group.runs if r.variant == label) for label in variants}
    return group, cpu, read


def throughput(args) -> dict:
    def counted(servers, admins) -> int:
        answer = _request(servers["counting"], "GET", "/api/v1/usage?granularity=day&limit=0", admins["counting"])
        return sum(b["total"] for b in json.loads(answer[1])["total"])

    group, cpu, total = side_by_side(args, {"counting": {}, "not counting": {"KEYHOUSE_USAGE_COUNTING": "false"}},
                                     "verify of 500 keys in turn, 1 worker", counted)
    return {"rounds": [r.__dict__ for r in group.runs],
            "counting_rps": group.median("counting"), "not_counting_rps": group.median("not counting"),
            "ratio": group.ratio("counting", "not counting"), "verdicts_counted": total,
            "cpu_us_per_request": cpu, "cpu_ratio": round(cpu["not counting"] / cpu["counting"], 3)}


def reads(args) -> dict:
    data = dataset(1_000_000, args.database)
    env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": data["url"], "KEYHOUSE_SECRET": SECRET}
    from sqlalchemy import create_engine, func, select

    from keyhouse.store import usage
    from keyhouse.store.models import ApiKey, KeyUsage

    engine = create_engine(data["url"])
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with engine.connect() as connection:
        organization = connection.scalar(select(ApiKey.organization_id).limit(1))
        rows = connection.execute(select(ApiKey.pk, ApiKey.id).order_by(ApiKey.pk)).all()
        present = connection.scalar(select(func.count()).select_from(KeyUsage)) or 0
    chosen = rows[:: len(rows) // 100][:100]
    if present < len(rows):
        print(f"writing a day of usage for {len(rows):,} keys, and 30 days for 100 (once)", file=sys.stderr)
        from sqlalchemy.orm import Session

        for start in range(0, len(rows), 50_000):
            with Session(engine) as s, s.begin():
                usage.count_verdicts(s, {usage.Verdict(pk, organization, "VALID", today - timedelta(days=1)): 3
                                         for pk, _ in rows[start:start + 50_000]}, {})
        with Session(engine) as s, s.begin():
            usage.count_verdicts(s, {usage.Verdict(pk, organization, outcome, today - timedelta(days=d, hours=h)): 7
                                     for pk, _ in chosen for d in range(30) for h in (0, 12)
                                     for outcome in ("VALID", "RATE_LIMITED")}, {})
        if args.database:
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    server = Server("usage-reads", [str(BIN / "keyhouse"), "serve", "--workers", "1"], env, 1, port=free_port())
    server.start(logs, data["admin_key"])
    first, end = (today - timedelta(days=29)).isoformat(), (today + timedelta(days=1)).isoformat()
    span = f"granularity=day&from={first}&to={end}".replace("+", "%2B")
    many = "/api/v1/usage?limit=100&" + span + "".join(f"&key_id={key_id}" for _, key_id in chosen)
    one = f"/api/v1/keys/{chosen[0][1]}/usage?" + span
    timings: dict[str, list[float]] = {"100 keys x 30 days": [], "1 key x 30 days": []}
    try:
        body = json.loads(_request(server, "GET", many, data["admin_key"])[1])
        assert len(body["keys"]) == 100 and all(len(k["buckets"]) == 30 for k in body["keys"]), body["keys"][:2]
        for _ in range(args.reads):
            for name, path in (("100 keys x 30 days", many), ("1 key x 30 days", one)):
                began = time.perf_counter()
                status, _ = _request(server, "GET", path, data["admin_key"])
                timings[name].append((time.perf_counter() - began) * 1000)
                assert status == 200
    finally:
        server.stop()
    return {name: {"p50_ms": round(statistics.median(t), 2), "max_ms": round(max(t), 2), "n": len(t)}
            for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a PostgreSQL URL (schemas are made in it); SQLite files otherwise")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    args.work = Path(tempfile.mkdtemp(prefix="keyhouse-usage-"))
    began = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()
    result = {"began": began, "database": "postgresql" if args.database else "sqlite", "load_before": load,
              "cpus": os.cpu_count()}
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
        print(json.dumps(result["throughput"] | {"rounds": "..."}, indent=1), file=sys.stderr)
    if not args.skip_reads:
        result["reads_at_1m_keys"] = reads(args)
    result["load_after"] = os.getloadavg()
    out = RESULTS / f"usage-{result['database']}.json"
    earlier = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**earlier, **result}, indent=1) + "\n")  # a part skipped keeps its last figures
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
