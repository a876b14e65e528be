"""Mixed traffic across the reference deployment's three hosts, with faults on a schedule, and what clients saw.

    deploy/reference/rig up
    .venv/bin/python benchmarks/rig_load.py --minutes 10                 # load, then the four drills
    .venv/bin/python benchmarks/rig_load.py --minutes 1 --no-drills      # load only
    .venv/bin/python benchmarks/rig_load.py --busy-organization 30       # changes/s: one org, or twelve

Each client thread owns keys it made (through the hosts in turn) and does, by weight: verify one of its
keys, spending a credit (which also writes the key's last use); create a key with credits; list a page;
update a key (verdict-changing: a change of the feed); reroll one with a grace
period; revoke one. After the load every acknowledged write is checked on the database (read straight from
the primary): every created key there, every acknowledged revocation revoked, every acknowledged update's
name kept. Statuses other than those the contract documents, and any 5xx but 503, fail the run.

The drills, in turn, each DRILL_SECONDS apart after a quiet start: kill -9 of host 3 (started again after
15 s); both PgBouncers restarted; Redis stopped for 20 s; the primary lost and the standby promoted. For
each: what clients saw, per host, and for how long. Writes results/rig-load.json and .md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
RIG = HERE.parent / "deploy" / "reference" / "rig"
HOSTS = [f"http://10.88.0.3{n}:8080/api/v1" for n in (1, 2, 3)]
PRIMARY_FIRST = "host=10.88.0.11,10.88.0.12 port=5432,5432 dbname=keyhouse user=postgres " \
                "target_session_attrs=read-write connect_timeout=3"
DOCUMENTED = {200, 201, 204, 404, 429, 503}  # what these operations may answer under load (404: a key revoked)
WEIGHTS = {"verify": 40, "create": 15, "list": 15, "update": 12, "reroll": 9, "revoke": 9}


class Ledger:
    """What the service acknowledged, and what every answer was, per second and host."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: set[str] = set()
        self.revoked: set[str] = set()
        self.named: dict[str, str] = {}  # key id -> the name its last acknowledged update gave it
        self.answers: collections.Counter = collections.Counter()  # (op, status)
        self.timeline: collections.Counter = collections.Counter()  # (second, host, "ok" | "503" | ...)
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)

    def saw(self, op: str, host: int, status: str, took: float, started: float) -> None:
        with self.lock:
            self.answers[(op, status)] += 1
            self.timeline[(int(time.monotonic() - started), host, "ok" if status[0] in "24" else status)] += 1
            self.latencies[op].append(took)


class Client(threading.Thread):
    def __init__(self, n: int, key: str, ledger: Ledger, started: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.n, self.key, self.ledger, self.started, self.stop = n, key, ledger, started, stop
        self.keys: dict[str, str] = {}  # id -> secret, live ones this client made
        self.random = random.Random(n)  # noqa: S311 - a load mix, not a secret
        self.turn = n

    def call(self, op: str, method: str, path: str, body: dict | None = None) -> httpx.Response | None:
        self.turn += 1
        host = self.turn % 3
        began = time.monotonic()
        try:
            answer = self.http.request(method, HOSTS[host] + path, json=body,
                                       headers={"Authorization": f"Bearer {self.key}"})
            status = str(answer.status_code)
        except httpx.HTTPError as e:
            answer, status = None, type(e).__name__
        self.ledger.saw(op, host, status, time.monotonic() - began, self.started)
        if answer is None or answer.status_code == 503:
            time.sleep(0.05)
        return answer

    def run(self) -> None:
        with httpx.Client(timeout=10) as self.http:
            ops, weights = list(WEIGHTS), list(WEIGHTS.values())
            while not self.stop.is_set():
                op = self.random.choices(ops, weights)[0] if self.keys else "create"
                getattr(self, op)()

    def pick(self) -> tuple[str, str]:
        return self.random.choice(list(self.keys.items()))

    def create(self) -> None:
        answer = self.call("create", "POST", "/keys", {"name": f"load {self.n}", "credits": {"remaining": 100000}})
        if answer is not None and answer.status_code == 201:
            made = answer.json()
            self.keys[made["id"]] = made["key"]
            with self.ledger.lock:
                self.ledger.created.add(made["id"])

    def verify(self) -> None:
        _id, secret = self.pick()
        self.call("verify", "POST", "/keys/verify", {"key": secret})

    def list(self) -> None:
        self.call("list", "GET", "/keys?limit=20")

    def update(self) -> None:
        key_id, _ = self.pick()
        name = f"load {self.n} {time.monotonic_ns()}"
        answer = self.call("update", "PATCH", f"/keys/{key_id}", {"name": name})
        if answer is not None and answer.status_code == 200:
            with self.ledger.lock:
                self.ledger.named[key_id] = name

    def reroll(self) -> None:
        key_id, _ = self.pick()
        answer = self.call("reroll", "POST", f"/keys/{key_id}/reroll", {"grace_period_seconds": 60})
        if answer is not None and answer.status_code == 201:
            self.keys[key_id] = answer.json()["key"]

    def revoke(self) -> None:
        if len(self.keys) < 3:
            return
        key_id, _ = self.pick()
        answer = self.call("revoke", "DELETE", f"/keys/{key_id}")
        if answer is not None and answer.status_code == 204:
            del self.keys[key_id]
            with self.ledger.lock:
                self.ledger.revoked.add(key_id)
                self.ledger.named.pop(key_id, None)


def rig(*args: str) -> None:
    subprocess.run([str(RIG), *args], check=True, capture_output=True, timeout=180)


def clients_for(admin_key: str, count: int, ledger: Ledger, started: float, stop: threading.Event) -> list[Client]:
    with httpx.Client(timeout=10) as http:
        keys = []
        for n in range(count):
            answer = http.post(f"{HOSTS[n % 3]}/keys", json={"name": f"client {n}"},
                               headers={"Authorization": f"Bearer {admin_key}"})
            answer.raise_for_status()
            keys.append(answer.json()["key"])
    return [Client(n, key, ledger, started, stop) for n, key in enumerate(keys)]


DRILLS = [
    ("kill -9 of host 3, started again after 15 s", [("kill-host", "3")], 15, [("start-host", "3")]),
    ("both PgBouncers restarted", [("restart-bouncers",)], 0, []),
    ("Redis stopped for 20 s", [("stop-redis",)], 20, [("start-redis",)]),
    ("the primary lost, the standby promoted", [("failover",)], 0, []),
]


def drills(started: float, spacing: float, stop: threading.Event, log: list) -> None:
    for name, before, hold, after in DRILLS:
        if stop.wait(spacing):
            return
        at = time.monotonic() - started
        for step in before:
            rig(*step)
        time.sleep(hold)
        for step in after:
            rig(*step)
        log.append({"drill": name, "at_s": round(at, 1), "took_s": round(time.monotonic() - started - at, 1)})
        print(f"  {at:6.1f} s: {name}", flush=True)


def check(ledger: Ledger) -> dict:
    """Every acknowledged write, on the database."""
    with psycopg.connect(PRIMARY_FIRST) as db:
        ids = list(ledger.created)
        rows = {r[0]: (r[1], r[2]) for r in db.execute(
            "SELECT id, revoked_at IS NOT NULL, description FROM api_keys WHERE id = ANY(%s)", [ids])}
        deadlocks = db.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = 'keyhouse'").fetchone()[0]
    lost = [i for i in ids if i not in rows]
    unrevoked = [i for i in ledger.revoked if i in rows and not rows[i][0]]
    renamed = [i for i, name in ledger.named.items() if i in rows and rows[i][1] != name]
    return {"created": len(ids), "revoked": len(ledger.revoked), "updated": len(ledger.named),
            "lost": len(lost), "revocations_lost": len(unrevoked), "updates_lost": len(renamed),
            "postgresql_deadlocks_detected": deadlocks}


def outages(ledger: Ledger, log: list) -> list[dict]:
    """Per drill: the seconds, per host, in which some answer was not a success (a 503 or no answer)."""
    seen = []
    for drill in log:
        start, end = int(drill["at_s"]) - 1, int(drill["at_s"] + drill["took_s"]) + 30
        per_host = {}
        for host in range(3):
            bad = sorted({s for (s, h, what), _n in ledger.timeline.items()
                          if h == host and what != "ok" and start <= s <= end})
            kinds: collections.Counter = collections.Counter()
            for (s, h, what), n in ledger.timeline.items():
                if h == host and what != "ok" and start <= s <= end:
                    kinds[what] += n
            per_host[f"h{host + 1}"] = {"seconds_with_failures": len(bad),
                                        "span_s": (bad[-1] - bad[0] + 1) if bad else 0, "answers": dict(kinds)}
        seen.append({**drill, "per_host": per_host})
    return seen


def organizations(rig_dir: Path, how_many: int) -> list[str]:
    """The admin keys of `how_many` organizations of their own (`keyhouse bootstrap` against the rig)."""
    env = {**os.environ, **dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(RIG), "env"], check=True, capture_output=True, text=True).stdout.split())}
    made = []
    for n in range(how_many):
        out = subprocess.run([env.get("KEYHOUSE_BIN", str(HERE.parent / ".venv" / "bin" / "keyhouse")), "bootstrap",
                              "--organization", f"busy {n} {time.time_ns()}", "--email",
                              f"busy{n}.{time.time_ns()}@rig.example"],
                             check=True, capture_output=True, text=True, env=env).stdout
        made.append(json.loads(out.strip().splitlines()[-1])["key"])
    return made


def busy_organization(admin_keys: list[str], seconds: int, threads: int, work: str = "update") -> dict:
    """Verdict-changing writes from `threads` clients across the three hosts, client n writing in the
    organization of admin_keys[n % len(admin_keys)]: one organization, or as many as threads (nothing shared
    but the machine). `work`: "update", a key's name changed (a change of the feed); or "revoke", a key
    created and then revoked (the organization's count of live keys twice, and a change of the feed)."""
    stop, counts, lock = threading.Event(), collections.Counter(), threading.Lock()
    with httpx.Client(timeout=10) as http:
        def new_key(n: int) -> dict:
            return http.post(f"{HOSTS[n % 3]}/keys", json={"name": f"busy {n}"},
                             headers={"Authorization": f"Bearer {admin_keys[n % len(admin_keys)]}"}).json()
        # Each thread its own key to write with (a key's own rate limit is 100/s), and keys to change.
        writers = [new_key(n)["key"] for n in range(threads)]
        made = [new_key(n // 4)["id"] for n in range(threads * 4)]

    def write(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            mine = {"Authorization": f"Bearer {writers[n]}"}
            while not stop.is_set():
                i += 1
                host = HOSTS[(n + i) % 3]
                if work == "update":
                    answer = http.patch(f"{host}/keys/{made[(n * 4) + i % 4]}", json={"name": f"busy {i}"},
                                        headers=mine)
                else:
                    key = http.post(f"{host}/keys", json={"name": f"doomed {i}"}, headers=mine).json()["id"]
                    answer = http.delete(f"{HOSTS[(n + i + 1) % 3]}/keys/{key}", headers=mine)
                with lock:
                    counts[answer.status_code] += 1

    pool = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(2)
    with lock:
        counts.clear()
    began = time.monotonic()
    waiting = []
    with psycopg.connect(PRIMARY_FIRST, autocommit=True) as db:
        while time.monotonic() - began < seconds:
            waiting.append(db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                           .fetchone()[0])
            time.sleep(0.1)
    with lock:
        done = dict(counts)
    took = time.monotonic() - began
    stop.set()
    for thread in pool:
        thread.join(15)
    changed = sum(n for status, n in done.items() if status < 300)
    return {"work": work, "organizations": len(admin_keys), "threads": threads, "seconds": round(took, 1),
            "answers": done, "changes_per_second": round(changed / took), "sessions_waiting_on_a_lock": {
                "mean": round(statistics.mean(waiting), 2), "max": max(waiting)}, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--no-drills", action="store_true")
    parser.add_argument("--busy-organization", type=int, metavar="SECONDS",
                        help="measure verdict-changing writes a second in one organization instead")
    parser.add_argument("--rig-dir", default=os.environ.get("RIG_DIR", "/tmp/keyhouse-rig"))
    args = parser.parse_args()
    admin_key = json.loads((Path(args.rig_dir) / "admin.json").read_text())["key"]
    results = HERE / "results"
    if args.busy_organization:
        # One organization against the same writes spread over as many organizations as writers, in turns:
        # the second is what the machine allows when writers share nothing, the first what one organization gets.
        threads = 12
        spread = organizations(Path(args.rig_dir), threads)
        found = {"busy_organization": [busy_organization(keys, args.busy_organization, threads, work)
                                       for work in ("update", "revoke") for _round in range(2)
                                       for keys in ([admin_key], spread)]}
        print(json.dumps(found, indent=1))
        (results / "rig-busy-organization.json").write_text(json.dumps(found, indent=1))
        return
    ledger, stop, log = Ledger(), threading.Event(), []
    started = time.monotonic()
    clients = clients_for(admin_key, args.clients, ledger, started, stop)
    for client in clients:
        client.start()
    seconds = args.minutes * 60
    driller = None
    if not args.no_drills:
        driller = threading.Thread(target=drills, args=(started, seconds / (len(DRILLS) + 1), stop, log), daemon=True)
        driller.start()
    time.sleep(seconds)
    stop.set()
    for client in clients:
        client.join(20)
    if driller:
        driller.join(60)
    found = {"minutes": args.minutes, "clients": args.clients, "load_at_end": os.getloadavg()[0],
             "answers": {f"{op} {status}": n for (op, status), n in sorted(ledger.answers.items())},
             "p50_ms": {op: round(statistics.median(v) * 1000, 1) for op, v in ledger.latencies.items()},
             "p99_ms": {op: round(statistics.quantiles(v, n=100)[98] * 1000, 1) for op, v in ledger.latencies.items()
                        if len(v) > 100},
             "acknowledged": check(ledger), "drills": outages(ledger, log)}
    def undocumented(status: str) -> bool:  # no answer at all is expected only of a host killed in a drill
        return int(status) not in DOCUMENTED if status.isdigit() else args.no_drills

    undocumented = {k: n for k, n in found["answers"].items() if undocumented(k.split()[-1])}
    found["undocumented_answers"] = undocumented
    print(json.dumps(found, indent=1))
    name = "rig-load" if not args.no_drills else "rig-load-no-drills"
    (results / f"{name}.json").write_text(json.dumps(found, indent=1))
    lost = found["acknowledged"]
    if undocumented or lost["lost"] or lost["revocations_lost"] or lost["updates_lost"]:
        raise SystemExit("FAILED: undocumented answers or acknowledged writes lost")


if __name__ == "__main__":
    main()
