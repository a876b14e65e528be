"""keyhouse under wrk, against the floor (bare Starlette) and the peer (FastAPI + pydantic), interleaved.

Starts every server as a user would (`keyhouse serve`, `uvicorn`), each on its own port, on datasets of
1,000 and 1,000,000 keys made with keyhouse's own CLI (kept in benchmarks/.data and reused), and drives
them with wrk on loopback: A B C, A B C, ... so that drift on a shared machine hits every variant alike.
A fourth reference, the Connexion ceiling (benchmarks/ceiling.py), serves keyhouse's contract through
Connexion with keyhouse's own work replaced by replayed answers: the most the framework lets through.
Reports req/s, p50, p99 and peak RSS per worker for each run, the ratios the performance targets name,
a soak's RSS at start and end, as a table and as JSON (benchmarks/results/latest.json by default).

    bash benchmarks/run                     # everything (about 15 minutes, plus 2 to load 1M keys once)
    bash benchmarks/run --quick             # 1,000 keys only, 3 s runs, a 20 s soak: a smoke test
    bash benchmarks/run --profile list      # where a request's time goes (py-spy, GIL-holding samples)
    bash benchmarks/run --profile verify --profile-server "connexion ceiling, fixed"   # a reference's
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
DATA = HERE / ".data"
SECRET = "keyhouse-benchmark-secret"
# High limits, so that the runs measure the service rather than its 429s; the limiter still runs.
LIMITS = {"KEYHOUSE_RATE_LIMIT": "1000000/second", "KEYHOUSE_ORGANIZATION_RATE_LIMIT": "1000000/second"}
LIST_PATH = "/api/v1/api-keys?limit=20"
VERIFY_PATH = "/api/v1/keys/verify"

# ------------------------------------------------------------------ datasets


def keyhouse_cli(env: dict, *args: str) -> dict:
    out = subprocess.run([str(BIN / "keyhouse"), *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset(count: int, database: str | None) -> dict:
    """An organization holding `count` keys (its admin's and a member's among them), made once and reused.

    The admin's key lists and verifies (a gateway's own key); the member's key is the one verified."""
    DATA.mkdir(exist_ok=True)
    manifest = DATA / f"{count}{'-postgresql' if database else ''}.json"
    if database:
        schema = f"keyhouse_bench_{count}"
        url = f"{database}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{DATA}/{count}.db"
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET}
    if manifest.exists():
        made = json.loads(manifest.read_text())
        if made.get("url") == url:
            # Made by an earlier keyhouse: brought to the current schema, as an operator would.
            subprocess.run([str(BIN / "keyhouse"), "db", "upgrade"], env=env, check=True, capture_output=True)
            return made
    if database:
        from sqlalchemy import create_engine, text

        with create_engine(database).begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DATA}/{count}.db{suffix}").unlink(missing_ok=True)
    print(f"loading a dataset of {count:,} keys into {url} (once; kept in {DATA})", file=sys.stderr)
    admin = keyhouse_cli(env, "bootstrap", "--organization", f"bench-{count}", "--email", f"admin@{count}.bench")
    member = keyhouse_cli(env, "users", "create", "--organization", admin["organization_id"],
                          "--email", f"member@{count}.bench", "--role", "member")
    keyhouse_cli(env, "keys", "load", "--organization", admin["organization_id"], "--user", member["user_id"],
                 "--count", str(count - 2))
    if database:
        from sqlalchemy import create_engine

        with create_engine(url).begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    made = {"count": count, "url": url, "admin_key": admin["key"], "member_key": member["key"]}
    manifest.write_text(json.dumps(made))
    return made


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict
    workers: int
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, logs: Path, probe_key: str) -> None:
        self.log = logs / f"{self.name}.log"
        self.process = subprocess.Popen(self.argv + ["--port", str(self.port)], env=self.env, cwd=ROOT,
                                        stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(self.url(LIST_PATH), headers={"REB-APIKEY": probe_key})
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; see {self.log}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def workers_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's children under --workers, else the process itself."""
        children = _children(self.process.pid)
        return children or [self.process.pid]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    # uvicorn's supervisor also starts a resource tracker; the workers are the ones serving Python code
    # of uvicorn: they are the children that are not multiprocessing helpers.
    return [c for c in found if "resource_tracker" not in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Peak RSS of any one worker while a run lasts, sampled every 0.2 s."""

    def __init__(self, server: Server):
        self.server, self.peak, self._stop = server, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max([self.peak, *(rss_mb(p) for p in self.server.workers_pids())])
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ wrk


@dataclass
class Run:
    variant: str
    scenario: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    peak_rss_mb: float


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def lua_for(scenario: str, key: str, verified: str, work: Path, delay_ms: float | None = None) -> Path | None:
    if scenario == "list":
        script = f'wrk.headers["REB-APIKEY"] = "{key}"\n'
    elif scenario == "verify":
        script = (f'wrk.method = "POST"\nwrk.body = \'{{"key": "{verified}"}}\'\n'
                  f'wrk.headers["Content-Type"] = "application/json"\n'
                  f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    else:  # mixed: the soak alternates a list and a verify
        script = f"""
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", "{LIST_PATH}", {{["REB-APIKEY"] = "{key}"}})
  end
  return wrk.format("POST", "{VERIFY_PATH}", {{["Authorization"] = "Bearer {key}",
    ["Content-Type"] = "application/json"}}, '{{"key": "{verified}"}}')
end
"""
    if delay_ms is not None:  # each connection waits this long before its next request: a load below saturation
        script += f"delay = function() return {delay_ms:.3f} end\n"
    path = work / f"{scenario}-{abs(hash((key, verified, delay_ms))) % 10**8}.lua"
    path.write_text(script)
    return path


def wrk(server: Server, scenario: str, seconds: float, connections: int, keys: dict, work: Path,
        round_: int = 0, label: str | None = None, delay_ms: float | None = None) -> Run:
    path = VERIFY_PATH if scenario == "verify" else LIST_PATH
    script = lua_for(scenario, keys["admin_key"], keys["member_key"], work, delay_ms)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), server.url(path)]
    with RssSampler(server) as rss:
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    return Run(label or server.name, scenario, round_, rps, p50, p99, non_2xx, errors, round(rss.peak, 1))


# ------------------------------------------------------------------ the suite


@dataclass
class Group:
    """Variants measured in turn, round after round; the first is the one the ratios are about."""

    title: str
    scenario: str
    variants: list[str]
    runs: list[Run] = field(default_factory=list)

    def median(self, variant: str, attribute: str = "rps") -> float:
        return statistics.median(getattr(r, attribute) for r in self.runs if r.variant == variant)

    def ratio(self, variant: str, reference: str) -> float:
        """The median, over rounds, of variant / reference measured side by side."""
        by_round = collections.defaultdict(dict)
        for r in self.runs:
            by_round[r.round][r.variant] = r.rps
        return statistics.median(v[variant] / v[reference] for v in by_round.values())


def servers_for(args, small: dict, big: dict | None) -> dict[str, Server]:
    def keyhouse(name, data, workers):
        env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": data["url"], "KEYHOUSE_SECRET": SECRET}
        serve = [str(BIN / "keyhouse"), "serve", "--workers", str(workers), "--allow-unshared-limits"]
        return Server(name, serve, env, workers)

    def uvicorn(name, target, env, workers):
        return Server(name, [str(BIN / "uvicorn"), target, "--workers", str(workers)], env, workers)

    # LIMITS too: the same-work peer counts rate limits as keyhouse does, and must not refuse the load either.
    db_env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": small["url"], "KEYHOUSE_SECRET": SECRET,
              "PYTHONPATH": str(ROOT)}
    floor_env = db_env
    static_env = {**os.environ, "KEYHOUSE_BENCH_STATIC": str(args.work / "static.json"), "PYTHONPATH": str(ROOT)}
    servers = {
        "keyhouse 1k": keyhouse("keyhouse-1k", small, 1),
        "floor": uvicorn("floor", "benchmarks.floor:app", floor_env, 1),
        "peer": uvicorn("peer", "benchmarks.peer:app", db_env, 1),
        "peer, bare": uvicorn("peer-bare", "benchmarks.peer:app", {**db_env, "KEYHOUSE_BENCH_PEER": "bare"}, 1),
        "static answers": uvicorn("static", "benchmarks.floor:app", static_env, 1),
        "connexion ceiling": uvicorn("ceiling", "benchmarks.ceiling:app", static_env, 1),
        "connexion ceiling, fixed": uvicorn("ceiling-fixed", "benchmarks.ceiling:app",
                                            {**static_env, "KEYHOUSE_BENCH_CEILING": "fixed"}, 1),
    }
    if args.workers2:
        servers["keyhouse 1k, 2 workers"] = keyhouse("keyhouse-1k-2w", small, 2)
        servers["floor, 2 workers"] = uvicorn("floor-2w", "benchmarks.floor:app", floor_env, 2)
    if big:
        servers["keyhouse 1M"] = keyhouse("keyhouse-1M", big, 1)
    return servers


def fetch(server: Server, path: str, headers: dict, body: bytes | None = None) -> tuple:
    request = urllib.request.Request(server.url(path), headers=headers, data=body)
    with urllib.request.urlopen(request) as answer:
        paging = {k.lower(): v for k, v in answer.headers.items() if k.lower().startswith("pagination-")}
        return json.load(answer), paging


def static_answers(server: Server, data: dict, work: Path) -> dict:
    """keyhouse's own answers, for the static server to replay byte for byte."""
    listed, headers = fetch(server, LIST_PATH, {"REB-APIKEY": data["admin_key"]})
    verified, _ = fetch(server, VERIFY_PATH, {"Authorization": f"Bearer {data['admin_key']}",
                                              "Content-Type": "application/json"},
                        json.dumps({"key": data["member_key"]}).encode())
    assert verified["valid"], verified
    answers = {"key": data["admin_key"], "list": {"body": listed, "headers": headers},
               "verify": {"key": data["member_key"], "body": verified}}
    (work / "static.json").write_text(json.dumps(answers))
    return answers


def same_answers(servers: dict[str, Server], expected: dict, data: dict) -> None:
    """The references must answer what keyhouse answers, or the comparison means nothing."""
    for name in ("floor", "peer", "peer, bare", "static answers", "connexion ceiling", "connexion ceiling, fixed"):
        listed, headers = fetch(servers[name], LIST_PATH, {"REB-APIKEY": data["admin_key"]})
        if (listed, headers) != (expected["list"]["body"], expected["list"]["headers"]):
            raise SystemExit(f"{name} does not answer the list as keyhouse does:\n{listed[:1]}\n"
                             f"{expected['list']['body'][:1]}\n{headers} {expected['list']['headers']}")
    for name in ("floor", "peer", "peer, bare", "static answers", "connexion ceiling", "connexion ceiling, fixed"):
        verified, _ = fetch(servers[name], VERIFY_PATH, {"Authorization": f"Bearer {data['admin_key']}",
                                                        "Content-Type": "application/json"},
                            json.dumps({"key": data["member_key"]}).encode())
        if verified != expected["verify"]["body"]:
            raise SystemExit(f"{name} does not answer verify as keyhouse does: {verified}")


def run_suite(args) -> dict:
    small = dataset(1_000, args.database)
    big = None if args.quick or args.latency else dataset(1_000_000, args.database)
    servers = servers_for(args, small, big)
    data_of = {name: (big if name.endswith("1M") else small) for name in servers}
    logs = args.work / "logs"
    logs.mkdir()
    groups = [
        Group("list of 20, 1,000 keys, 1 worker", "list", ["keyhouse 1k", "peer", "peer, bare", "floor",
                                                                 "static answers", "connexion ceiling",
                                                                 "connexion ceiling, fixed"]),
        Group("verify, 1,000 keys, 1 worker", "verify", ["keyhouse 1k", "peer", "peer, bare", "floor",
                                                         "static answers", "connexion ceiling",
                                                         "connexion ceiling, fixed"]),
    ]
    if big:
        groups += [Group("list of 20, 1,000,000 vs 1,000 keys", "list", ["keyhouse 1M", "keyhouse 1k"]),
                   Group("verify, 1,000,000 vs 1,000 keys", "verify", ["keyhouse 1M", "keyhouse 1k"])]
    if args.latency:  # one request at a time: what a request costs end to end, no queueing
        groups = [Group("verify, 1,000 keys, 1 worker, 1 connection", "verify",
                        ["keyhouse 1k", "connexion ceiling, fixed", "connexion ceiling", "floor"])]
    if args.workers2:
        groups += [Group("list of 20, 2 workers vs 1", "list", ["keyhouse 1k, 2 workers", "keyhouse 1k",
                                                                "floor, 2 workers"]),
                   Group("verify, 2 workers vs 1", "verify", ["keyhouse 1k, 2 workers", "keyhouse 1k",
                                                              "floor, 2 workers"])]
    try:
        keyhouse_first = servers["keyhouse 1k"]
        keyhouse_first.port = free_port()
        keyhouse_first.start(logs, small["admin_key"])
        expected = static_answers(keyhouse_first, small, args.work)
        for name, server in servers.items():
            if server.process is None:
                server.port = free_port()
                server.start(logs, data_of[name]["admin_key"])
        same_answers(servers, expected, small)
        for name, server in servers.items():  # warm every path once
            for scenario in ("list", "verify"):
                wrk(server, scenario, 2, args.connections, data_of[name], args.work)
        interleaved(groups, servers, data_of, args)
        soak = run_soak(servers["keyhouse 1M" if big else "keyhouse 1k"], data_of, args) if args.soak else None
        errors_logged = {name: _errors_in(server.log) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    return report(args, groups, soak, errors_logged)


def interleaved(groups: list[Group], servers: dict[str, Server], data_of: dict, args) -> None:
    """args.rounds rounds, each measuring every variant of every group in turn."""
    for round_ in range(args.rounds):
        for group in groups:
            for variant in group.variants:
                run = wrk(servers[variant], group.scenario, args.seconds, args.connections, data_of[variant],
                          args.work, round_, label=variant)
                if run.non_2xx or run.socket_errors:  # a server that refuses the load serves nothing comparable
                    raise SystemExit(f"{variant} answered {run.non_2xx} non-2xx and had {run.socket_errors} "
                                     f"socket errors in {group.title}; see {servers[variant].log}")
                group.runs.append(run)
                print(f"  round {round_ + 1}: {group.title}: {variant}: {run.rps:,.0f} req/s, "
                      f"p99 {run.p99_ms:.1f} ms", file=sys.stderr, flush=True)


def run_soak(server: Server, data_of: dict, args) -> dict:
    """A fixed load (list and verify in turn) for --soak seconds; RSS after 10 s of it, and at its end."""
    data = data_of["keyhouse 1M" if server.name.endswith("1M") else "keyhouse 1k"]
    print(f"  soak: {args.soak} s of list+verify at {args.connections} connections on {server.name}",
          file=sys.stderr, flush=True)
    warm = wrk(server, "mixed", 10, args.connections, data, args.work)
    start = {pid: rss_mb(pid) for pid in server.workers_pids()}
    run = wrk(server, "mixed", args.soak, args.connections, data, args.work)
    end = {pid: rss_mb(pid) for pid in server.workers_pids()}
    growth = max((end[p] - start[p]) / start[p] for p in start if p in end and start[p])
    return {"server": server.name, "seconds": args.soak, "connections": args.connections, "rps": run.rps,
            "p99_ms": run.p99_ms, "non_2xx": run.non_2xx + warm.non_2xx, "rss_start_mb": round(max(start.values()), 1),
            "rss_end_mb": round(max(end.values()), 1), "rss_growth": round(growth, 4)}


def _errors_in(log: Path | None) -> int:
    if log is None or not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if "ERROR" in line or "Traceback" in line or '" 5' in line)


# ------------------------------------------------------------------ the report

TARGETS = [
    # (what, group title prefix, variant, reference, minimum ratio): issue 16's
    ("list >= 1.0x the same-work FastAPI peer", "list of 20, 1,000 keys", "keyhouse 1k", "peer", 1.0),
    ("verify >= 1.0x the same-work FastAPI peer", "verify, 1,000 keys", "keyhouse 1k", "peer", 1.0),
    ("list >= 0.65x the unmodified Connexion ceiling", "list of 20, 1,000 keys", "keyhouse 1k", "connexion ceiling",
     0.65),
    ("verify >= 0.65x the unmodified Connexion ceiling", "verify, 1,000 keys", "keyhouse 1k", "connexion ceiling",
     0.65),
    ("list: the fixed ceiling >= 0.45x the floor", "list of 20, 1,000 keys", "connexion ceiling, fixed", "floor",
     0.45),
    ("verify: the fixed ceiling >= 0.45x the floor", "verify, 1,000 keys", "connexion ceiling, fixed", "floor",
     0.45),
    ("list, 1M keys within 1.2x of 1k (ratio >= 0.83)", "list of 20, 1,000,000", "keyhouse 1M", "keyhouse 1k", 1 / 1.2),
    ("verify, 1M keys within 1.2x of 1k (ratio >= 0.83)", "verify, 1,000,000", "keyhouse 1M", "keyhouse 1k", 1 / 1.2),
    ("list, 2 workers >= 1.8x 1 worker", "list of 20, 2 workers", "keyhouse 1k, 2 workers", "keyhouse 1k", 1.8),
    ("verify, 2 workers >= 1.8x 1 worker", "verify, 2 workers", "keyhouse 1k, 2 workers", "keyhouse 1k", 1.8),
]
# (what, group title prefix, variant, most p99 ms): --latency's
LATENCY_TARGETS = [("verify p99 <= 2 ms at 1 connection", "verify, 1,000 keys, 1 worker, 1 connection",
                    "keyhouse 1k", 2.0)]
# Reported beside the targets, no target of their own.
BESIDE = [("list / the bare async peer", "list of 20, 1,000 keys", "keyhouse 1k", "peer, bare"),
          ("verify / the bare async peer", "verify, 1,000 keys", "keyhouse 1k", "peer, bare"),
          ("list: the floor's 2 workers / 1", "list of 20, 2 workers", "floor, 2 workers", "floor"),
          ("list / the fixed ceiling", "list of 20, 1,000 keys", "keyhouse 1k", "connexion ceiling, fixed"),
          ("verify / the fixed ceiling", "verify, 1,000 keys", "keyhouse 1k", "connexion ceiling, fixed")]


def report(args, groups: list[Group], soak: dict | None, errors_logged: dict) -> dict:
    lines = [f"keyhouse benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
             f"{'SQLite' if not args.database else 'PostgreSQL'}; wrk -t1 -c{args.connections} -d{args.seconds}s, "
             f"{args.rounds} interleaved rounds (medians)", "",
             "| scenario | server | req/s | p50 ms | p99 ms | peak RSS/worker MB | non-2xx |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for g in groups:
        for v in g.variants:
            runs = [r for r in g.runs if r.variant == v]
            lines.append(f"| {g.title} | {v} | {g.median(v):,.0f} | {g.median(v, 'p50_ms'):.2f} | "
                         f"{g.median(v, 'p99_ms'):.2f} | {max(r.peak_rss_mb for r in runs):.0f} | "
                         f"{sum(r.non_2xx + r.socket_errors for r in runs)} |")
    verdicts = []
    for what, prefix, variant, reference, minimum in [] if args.latency else TARGETS:
        group = next((g for g in groups if g.title.startswith(prefix)), None)
        if group is None or variant not in group.variants or reference not in group.variants:
            continue
        ratio = group.ratio(variant, reference)
        verdicts.append({"target": what, "ratio": round(ratio, 3), "met": ratio >= minimum})
    for what, title, variant, most in LATENCY_TARGETS:
        group = next((g for g in groups if g.title == title), None)
        if group is not None:
            p99 = group.median(variant, "p99_ms")
            verdicts.append({"target": what, "p99_ms": round(p99, 3), "met": p99 <= most})
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for v in verdicts:
        measured = f"{v['ratio']:.2f}x" if "ratio" in v else f"{v['p99_ms']:.2f} ms"
        lines.append(f"| {v['target']} | {measured} | {'yes' if v['met'] else 'NO'} |")
    beside = []
    for what, prefix, variant, reference in BESIDE:
        group = next((g for g in groups if g.title.startswith(prefix)), None)
        if group is not None and variant in group.variants and reference in group.variants:
            beside.append({"what": what, "ratio": round(group.ratio(variant, reference), 3)})
    lines += ["", "| beside | ratio |", "|---|---:|"] + [f"| {b['what']} | {b['ratio']:.2f}x |" for b in beside]
    # The framework's limit: what Connexion serves of keyhouse's contract when keyhouse's code costs nothing.
    ceilings = []
    for g in groups:
        if "connexion ceiling" in g.variants:
            ceilings.append({"group": g.title, "ceiling_vs_floor": round(g.ratio("connexion ceiling", "floor"), 3),
                             "keyhouse_vs_ceiling": round(g.ratio("keyhouse 1k", "connexion ceiling"), 3)})
    if ceilings:
        lines += ["", "| scenario | Connexion ceiling / floor | keyhouse / ceiling |", "|---|---:|---:|"]
        lines += [f"| {c['group']} | {c['ceiling_vs_floor']:.2f}x | {c['keyhouse_vs_ceiling']:.2f}x |"
                  for c in ceilings]
    if soak:
        soak["met"] = soak["rss_end_mb"] <= 150 and soak["rss_growth"] <= 0.05
        lines += ["", f"Soak: {soak['seconds']} s of list+verify at {soak['connections']} connections on "
                      f"{soak['server']}: {soak['rps']:,.0f} req/s, p99 {soak['p99_ms']:.1f} ms, "
                      f"RSS per worker {soak['rss_start_mb']} MB after 10 s, {soak['rss_end_mb']} MB at the end "
                      f"({soak['rss_growth']:+.1%}); target <= 150 MB and <= 5% growth: "
                      f"{'met' if soak['met'] else 'NOT met'}. Non-2xx: {soak['non_2xx']}."]
    lines += ["", "Error lines in the servers' logs: " + ", ".join(f"{k} {v}" for k, v in errors_logged.items())]
    table = "\n".join(lines)
    print(table)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "python": platform.python_version(), "database": "postgresql" if args.database else "sqlite",
              "wrk": {"threads": 1, "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds},
              "groups": [{"title": g.title, "scenario": g.scenario,
                          "runs": [asdict(r) for r in g.runs]} for g in groups],
              "targets": verdicts, "beside": beside, "ceilings": ceilings, "soak": soak,
              "error_lines_in_logs": errors_logged,
              "table": table}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    (args.json.with_suffix(".md")).write_text(table + "\n")
    print(f"\nwritten: {args.json} and {args.json.with_suffix('.md')}", file=sys.stderr)
    return result


# ------------------------------------------------------------------ profile mode


def profile(args) -> None:
    """py-spy samples keyhouse (1 worker) under wrk, counting only samples that hold the GIL: CPU time."""
    if not shutil.which("py-spy", path=str(BIN)) and not shutil.which("py-spy"):
        sys.exit("profile mode needs py-spy (pip install py-spy)")
    small = dataset(1_000, args.database)
    logs = args.work / "logs"
    logs.mkdir()
    servers = servers_for(argparse.Namespace(**{**vars(args), "workers2": False}), small, None)
    if args.profile_server not in servers:
        sys.exit(f"--profile-server: one of {', '.join(servers)}")
    if args.profile_server != "keyhouse 1k":  # the references replay keyhouse's answers: record them first
        servers["keyhouse 1k"].port = free_port()
        servers["keyhouse 1k"].start(logs, small["admin_key"])
        try:
            static_answers(servers["keyhouse 1k"], small, args.work)
        finally:
            servers["keyhouse 1k"].stop()
    server = servers[args.profile_server]
    server.port = free_port()
    server.start(logs, small["admin_key"])
    try:
        wrk(server, args.profile, 2, args.connections, small, args.work)
        raw = args.work / f"profile-{args.profile}.txt"
        load = threading.Thread(target=wrk, args=(server, args.profile, args.seconds + 2, args.connections, small,
                                                  args.work))
        load.start()
        time.sleep(1)
        subprocess.run([shutil.which("py-spy", path=str(BIN)) or "py-spy", "record", "--pid",
                        str(server.process.pid), "--gil", "--rate", "250", "--duration", str(args.seconds),
                        "--format", "raw", "--output", str(raw)], check=True, capture_output=True)
        load.join()
    finally:
        server.stop()
    suffix = "" if args.profile_server == "keyhouse 1k" else "-" + re.sub(r"\W+", "-", args.profile_server)
    summarize(raw, args.json.parent / f"profile-{args.profile}{suffix}.txt")


# keyhouse's modules that wrap the framework rather than run inside it: the CLI that starts uvicorn, the
# HTTP protocol it hands uvicorn, and the ASGI middleware around Connexion.
_WRAPPERS = re.compile(r"\(keyhouse/(cli|protocol|middleware)\.py")
_FRAMEWORK = re.compile(r"\((connexion|starlette|uvicorn|anyio|asyncio|uvloop)/")


def _keyhouses(frames: list[str]) -> bool:
    """Whether a sample is keyhouse's own work: its handlers, auth, validators, store, logs and metrics,
    with what they call (SQLAlchemy, fastjsonschema, ...). Below one of keyhouse's wrappers, a frame of
    Connexion, Starlette or uvicorn is the framework's work."""
    deepest = max((i for i, frame in enumerate(frames) if "(keyhouse/" in frame), default=None)
    if deepest is None:
        return False
    if not _WRAPPERS.search(frames[deepest]):
        return True
    below = frames[deepest + 1] if deepest + 1 < len(frames) else ""
    return bool(below) and not _FRAMEWORK.search(below)


def summarize(raw: Path, keep: Path) -> None:
    inclusive, own, total, ours = collections.Counter(), collections.Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if _keyhouses(stack.split(";")[1:]):
            ours += int(count)
        frames = [re.sub(r" \((?:.*/)?([^/]+?):\d+\)$", r" (\1)", f) for f in stack.split(";")[1:]]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        if frames:
            own[frames[-1]] += int(count)
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(raw, keep.with_suffix(".folded"))
    lines = [f"{total} samples holding the GIL (folded stacks: {keep.with_suffix('.folded')})",
             f"in keyhouse's code (middleware, handlers, auth, validators, store, and what they call): "
             f"{100 * ours / total:.0f}%; "
             f"in Connexion, Starlette and uvicorn: {100 * (total - ours) / total:.0f}%", "",
             "share of CPU time inside (inclusive):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(45)]
    lines += ["", "share of CPU time spent in the function itself (self):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(25)]
    keep.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 keys only, short runs, a 20 s soak")
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the medians are reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--soak", type=int, default=300, help="soak length in seconds (0: none)")
    parser.add_argument("--no-workers2", dest="workers2", action="store_false", help="skip the 2-worker runs")
    parser.add_argument("--database", help="a PostgreSQL URL (one schema per dataset is made in it); "
                                           "default: SQLite files in benchmarks/.data")
    parser.add_argument("--latency", action="store_true",
                        help="verify at 1 connection only (keyhouse, the ceilings, the floor): p50 and p99 "
                             "(written to results/latency.*)")
    parser.add_argument("--profile", choices=["list", "verify"], help="profile one scenario instead")
    parser.add_argument("--profile-server", default="keyhouse 1k",
                        help='which server --profile samples (e.g. "connexion ceiling, fixed")')
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.soak = min(args.seconds, 3), min(args.rounds, 2), min(args.soak, 20)
    if args.latency:
        args.connections, args.workers2, args.soak = 1, False, 0
        if args.json == HERE / "results" / "latest.json":
            args.json = HERE / "results" / "latency.json"
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk (benchmarks/run does it when it can)")
    with tempfile.TemporaryDirectory(prefix="keyhouse-bench-") as work:
        args.work = Path(work)
        if args.profile:
            profile(args)
        else:
            run_suite(args)


if __name__ == "__main__":
    main()
