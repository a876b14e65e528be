"""The guarded app (examples/guarded_fastapi) under wrk, and how soon it refuses a revoked key.

    python benchmarks/guard.py [--database postgresql+psycopg://...] [--seconds 10] [--rounds 3]

Throughput, side by side in one run, interleaved rounds, medians (wrk -t1 -c16, one uvicorn worker for the
app, `keyhouse serve --workers 2` behind it, on this machine):
- unguarded: the example app with the middleware left out (`GUARDED=0`), the same handlers;
- guarded, warm: the same app guarded, every request with the same valid key (answered from the cache);
- guarded, miss: every request a different key of 500 in rotation, with a cache of one (every verdict asked
  of keyhouse), beside keyhouse's own verify under the same wrk, asked of the same 500 keys in turn.
Revocation: 100 times, a key is made, the guarded app serves it (its verdict cached), the key is revoked
through keyhouse, and the app is asked (one request at a time, no pause) until it refuses; the time from
the revocation's answer to the first refusal, p50 and p99.

Fair: the unguarded app is the guarded one minus the middleware, served alike; the miss path pays what a
gateway pays without a cache. Results go to benchmarks/results/guard-<database>.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as suite  # noqa: E402 - the suite's server and dataset helpers

ROOT = suite.ROOT
OPENAPI = ROOT / "examples" / "guarded_fastapi" / "openapi.yaml"


def app_server(name: str, keyhouse_url: str, gateway_key: str, **environment: str) -> suite.Server:
    env = {**os.environ, "KEYHOUSE_URL": keyhouse_url, "KEYHOUSE_GATEWAY_KEY": gateway_key, **environment}
    argv = [sys.executable, "-m", "uvicorn", "examples.guarded_fastapi.app:app", "--no-access-log",
            "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    return suite.Server(name, argv, env, 1, port=suite.free_port())


def start_app(server: suite.Server, key: str, logs: Path) -> None:
    server.log = logs / f"{server.name}.log"
    server.process = subprocess.Popen(server.argv + ["--port", str(server.port)], env=server.env, cwd=ROOT,
                                      stdout=server.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(server.url("/health"), timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    # warm: the feed is followed, and the key's verdict cached
    deadline = time.monotonic() + 20
    while httpx.get(server.url("/documents/1"), headers={"X-API-Key": key}).status_code != 200:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    time.sleep(0.5)


def wrk(url: str, script: str, seconds: float, work: Path, name: str) -> dict:
    lua = work / f"{name}.lua"
    lua.write_text(script)
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(lua), url], check=True,
                         capture_output=True, text=True).stdout
    import re

    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p99_ms": suite._ms(re.search(r"\s99%\s+(\S+)", out).group(1)), "non_2xx": non_2xx}  # noqa: SLF001


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used: the app's cost per request, whatever else the
    machine's two cores were doing meanwhile (wrk, keyhouse), which moves req/s by a fifth from round to round."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="a PostgreSQL URL (a schema of its own is made); default SQLite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--revocations", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyhouse-guard-") as tmp:
        work = Path(tmp)
        if args.database:
            from sqlalchemy import create_engine, text

            with create_engine(args.database).begin() as connection:
                connection.execute(text("DROP SCHEMA IF EXISTS keyhouse_guard_bench CASCADE"))
                connection.execute(text("CREATE SCHEMA keyhouse_guard_bench"))
            url = f"{args.database}?options=-csearch_path%3Dkeyhouse_guard_bench"
        else:
            url = f"sqlite:///{work}/keyhouse.db"
        env = {**os.environ, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": suite.SECRET, **suite.LIMITS}
        boot = suite.keyhouse_cli(env, "bootstrap", "--organization", "guard", "--email", "admin@guard.bench")
        serve = [str(suite.BIN / "keyhouse"), "serve", "--workers", "2", "--allow-unshared-limits"]
        keyhouse = suite.Server("keyhouse", serve, env, 2, port=suite.free_port())
        keyhouse.start(work, boot["key"])
        base = keyhouse.url("/api/v1")
        admin = {"Authorization": f"Bearer {boot['key']}"}
        with httpx.Client(base_url=base, headers=admin, timeout=30) as kh:
            assert kh.post("/apis", json={"name": "documents", "openapi": OPENAPI.read_text()}).status_code == 201
            made = lambda **body: kh.post("/keys", json={"name": "k", **body}).json()  # noqa: E731
            gateway = made(permissions=["verifyKey", "listKeyChanges"])["key"]
            customer = made(permissions=["documents:getDocument"])["key"]
            rotation = [made(permissions=["documents:getDocument"])["key"] for _ in range(500)]
            apps = {"unguarded": app_server("unguarded", base, gateway, GUARDED="0"),
                    "guarded, warm": app_server("guarded-warm", base, gateway),
                    "guarded, miss": app_server("guarded-miss", base, gateway, KEYHOUSE_CACHE_SIZE="1")}
            for server in apps.values():
                start_app(server, customer, work)
            one = f'wrk.headers["X-API-Key"] = "{customer}"\n'
            keys_lua = "{" + ",".join(f'"{k}"' for k in rotation) + "}"
            rotate = f"""local keys = {keys_lua}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/documents/1", {{["X-API-Key"] = keys[n % #keys + 1]}})
end
"""
            # keyhouse's own verify asked the miss path's questions: the same 500 keys in the same rotation
            # (keyhouse keeps each key's credentials too: one key alone would be kinder to it than the miss path)
            verify = f"""local keys = {keys_lua}
local n = 0
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {gateway}"}}
request = function()
  n = n + 1
  local body = '{{"key": "' .. keys[n % #keys + 1] .. '", "api": "documents", "permissions": ["getDocument"]}}'
  return wrk.format("POST", nil, headers, body)
end
"""
            runs: dict[str, list[dict]] = {name: [] for name in [*apps, "keyhouse verify"]}
            try:
                for round_ in range(args.rounds):
                    for name, server in apps.items():
                        before = cpu_seconds(server.process.pid)
                        run = wrk(server.url("/documents/1"), rotate if "miss" in name else one,
                                  args.seconds, work, f"{name}-{round_}".replace(" ", "").replace(",", ""))
                        run["app_cpu_us"] = (cpu_seconds(server.process.pid) - before) / run["requests"] * 1e6
                        runs[name].append(run)
                    runs["keyhouse verify"].append(wrk(keyhouse.url("/api/v1/keys/verify"), verify, args.seconds,
                                                       work, f"verify-{round_}"))
                latencies = revocations(kh, apps["guarded, warm"], args.revocations)
            finally:
                for server in apps.values():
                    server.stop()
                keyhouse.stop()
    report(args, runs, latencies)


def revocations(kh: httpx.Client, app: suite.Server, count: int) -> list[float]:
    """Seconds from a revocation's answer to the guarded app's first refusal of the key."""
    latencies = []
    with httpx.Client(base_url=app.url(""), timeout=10) as client:
        for _ in range(count):
            made = kh.post("/keys", json={"name": "doomed", "permissions": ["documents:getDocument"]}).json()
            key = {"X-API-Key": made["key"]}
            assert client.get("/documents/1", headers=key).status_code == 200
            assert client.get("/documents/1", headers=key).status_code == 200  # from the cache now
            assert kh.delete(f"/user/api-keys/{made['id']}").status_code == 204
            revoked = time.monotonic()
            while client.get("/documents/1", headers=key).status_code == 200:
                assert time.monotonic() - revoked < 30, "a revoked key was still served after 30 s"
            latencies.append(time.monotonic() - revoked)
    return latencies


def report(args, runs: dict[str, list[dict]], latencies: list[float]) -> None:
    database = "postgresql" if args.database else "sqlite"
    median = {name: statistics.median(r["rps"] for r in measured) for name, measured in runs.items()}
    lines = [f"# guarded app, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
             f"keyhouse on {database} (2 workers), app on 1 uvicorn worker, wrk -t1 -c16, "
             f"{args.rounds} x {args.seconds:g} s interleaved, medians",
             "", "| variant | req/s | p99 ms | non-2xx | vs unguarded | app CPU per request | unguarded's / this |",
             "|---|---|---|---|---|---|---|"]
    cpu = {name: statistics.median(r["app_cpu_us"] for r in measured) for name, measured in runs.items()
           if "app_cpu_us" in measured[0]}
    for name, measured in runs.items():
        p99 = statistics.median(r["p99_ms"] for r in measured)
        bad = sum(r["non_2xx"] for r in measured)
        per = f"{cpu[name]:.0f} us | {cpu['unguarded'] / cpu[name]:.2f}x" if name in cpu else "| "
        lines.append(f"| {name} | {median[name]:.0f} | {p99:.2f} | {bad} | {median[name] / median['unguarded']:.2f}x "
                     f"| {per} |")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    lines += ["", f"revocation to first refusal, {len(latencies)} revocations: p50 "
              f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = suite.HERE / "results" / f"guard-{database}.txt"
    out.write_text(text)
    (suite.HERE / "results" / f"guard-{database}.json").write_text(json.dumps(
        {"runs": runs, "revocation_seconds": latencies}, indent=1))


if __name__ == "__main__":
    main()
