"""Instructions per verify, counted by callgrind: what tracing costs, immune to this host's drifting speed.

    .venv/bin/python benchmarks/instructions.py [--requests 200]

On this machine req/s and even CPU seconds per request move by a fifth from one minute to the next, so
benchmarks/tracing.py's ratios carry that noise. Callgrind counts instructions instead: the same count for
the same work whatever else the machine does. For each variant the app (keyhouse.app.create_app, on a SQLite
file, its tracing made by keyhouse.tracing.start() from the OTEL_* variables as `keyhouse serve` makes it)
answers N and then 2N verifies of 500 keys in turn, in-process through Starlette's TestClient, each under
`valgrind --tool=callgrind`; (count at 2N - count at N) / N is a verify's instructions without start-up.
The traced variants export over OTLP/HTTP to benchmarks/tracing.py's collector, in a process of its own
(outside valgrind). Variants: untraced; traced with every request sampled out (always_off); one in ten;
every request. Writes results/instructions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "untraced": {},
    "sampled out": {"OTEL_TRACES_SAMPLER": "always_off"},
    "1 in 10": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "every request": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


def drive(requests: int, database: str) -> None:
    """In the process callgrind watches: `requests` verifies through the app."""
    from starlette.testclient import TestClient

    from keyhouse import tracing
    from keyhouse.app import create_app
    from keyhouse.config import Settings

    settings = Settings(database_url=database, secret=b"instructions-secret", webhook_sending=False,
                        rate_limit="1000000/second", organization_rate_limit="1000000/second")
    keys = json.loads(Path(database.removeprefix("sqlite:///") + ".keys").read_text())
    app = create_app(settings, tracing.start())
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    with TestClient(app) as client:
        for i in range(requests):
            answer = client.post("/api/v1/keys/verify", json={"key": keys["keys"][i % len(keys["keys"])]},
                                 headers=headers)
            assert answer.status_code == 200, answer.text


def prepare(work: Path) -> str:
    """A SQLite file with an organization, its admin's key and 500 keys, made by keyhouse itself."""
    from starlette.testclient import TestClient

    from keyhouse.app import create_app
    from keyhouse.config import Settings

    database = f"sqlite:///{work}/keyhouse.db"
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": database, "KEYHOUSE_SECRET": "instructions-secret"}
    booted = subprocess.run([sys.executable, "-m", "keyhouse.cli", "bootstrap", "--organization", "i",
                             "--email", "i@i.test"], env=env, capture_output=True, text=True, check=True)
    admin = json.loads(booted.stdout.strip().splitlines()[-1])["key"]
    settings = Settings(database_url=database, secret=b"instructions-secret", webhook_sending=False,
                        rate_limit="1000000/second", organization_rate_limit="1000000/second")
    with TestClient(create_app(settings)) as client:
        made = [client.post("/api/v1/keys", json={"name": f"k{i}"}, headers={"Authorization": f"Bearer {admin}"})
                .json()["key"] for i in range(500)]
    Path(f"{work}/keyhouse.db.keys").write_text(json.dumps({"admin": admin, "keys": made}))
    return database


def counted(variant: dict, requests: int, database: str, collector: int, work: Path) -> int:
    env = {**os.environ, **variant, "PYTHONHASHSEED": "0"}
    if variant:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector}"
    done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.%p",
                           sys.executable, __file__, "--drive", str(requests), "--database", database],
                          env=env, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive, args.database)
        return
    work = Path(tempfile.mkdtemp(prefix="keyhouse-instructions-"))
    database = prepare(work)
    port = 4390 + os.getpid() % 100
    collector = subprocess.Popen([sys.executable, str(HERE / "tracing.py"), "--collector", str(port)])
    time.sleep(1)
    per_request = {}
    try:
        for name, variant in VARIANTS.items():
            once = counted(variant, args.requests, database, port, work)
            twice = counted(variant, 2 * args.requests, database, port, work)
            per_request[name] = (twice - once) / args.requests
            print(f"{name}: {per_request[name]:,.0f} instructions a verify", file=sys.stderr, flush=True)
    finally:
        collector.terminate()
    base = per_request["untraced"]
    result = {"requests": args.requests, "instructions_per_verify": {k: round(v) for k, v in per_request.items()},
              "ratio_to_untraced": {k: round(base / v, 3) for k, v in per_request.items()},
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (HERE / "results" / "instructions.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
