"""The image (issue 26): its size, and how long after `podman run` it answers /readyz.

    .venv/bin/python benchmarks/image.py [--tag localhost/keyhouse:latest] [--rounds 5]

Takes an image scripts/image built. Size as podman counts it (`podman image inspect`: the goal, <= 200 MB),
and gzip'd as it would travel (`podman save | gzip`). Time to ready: from `podman run -d` to the first 200
of /readyz, polled every 50 ms, on a read-only root, twice per round: SQLite in a volume with one worker
(the quick start), and this machine's PostgreSQL and Redis with two workers (a deployment); the goal is
<= 10 s. Writes results/image.json, with the machine's load average.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import time
import urllib.request
import uuid

from run import HERE, free_port

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379"


def _podman(*args: str, env: dict) -> str:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=True).stdout


def _time_to_ready(tag: str, env: dict, *settings: str) -> float:
    port, name = free_port(), f"keyhouse-bench-{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    _podman("run", "-d", "--name", name, "--network", "host", "--read-only", "-e", f"KEYHOUSE_PORT={port}",
            *settings, tag, env=env)
    try:
        while time.monotonic() - began < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/readyz", timeout=1):
                    return time.monotonic() - began
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("not ready in 60 s")
    finally:
        subprocess.run(["podman", "rm", "-f", name], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="localhost/keyhouse:latest")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--containers-conf", help="a containers.conf for this machine (runc; tests/conftest.py "
                                                  "machine_containers_conf says why)")
    args = parser.parse_args()
    env = {**os.environ, **({"CONTAINERS_CONF": args.containers_conf} if args.containers_conf else {})}
    (inspected,) = json.loads(_podman("image", "inspect", args.tag, env=env))
    saved = subprocess.run(["podman", "save", args.tag], env=env, capture_output=True, check=True).stdout
    volume, schema = f"keyhouse-bench-{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:12]}"
    secret = ["-e", "KEYHOUSE_SECRET=benchmark-secret"]
    sqlite = ["-v", f"{volume}:/var/lib/keyhouse", *secret]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f"CREATE SCHEMA {schema}"],
                   check=True)
    postgresql = [*secret, "-e", f"KEYHOUSE_DATABASE_URL={POSTGRES}?options=-csearch_path%3D{schema}",
                  "-e", f"KEYHOUSE_REDIS_URL={REDIS}", "-e", "KEYHOUSE_WORKERS=2"]
    try:
        _podman("run", "--rm", *sqlite, args.tag, "db", "upgrade", env=env)
        _podman("run", "--rm", "--network", "host", *postgresql, args.tag, "db", "upgrade", env=env)
        times: dict[str, list[float]] = {"sqlite": [], "postgresql+redis": []}
        for _ in range(args.rounds):
            times["sqlite"].append(_time_to_ready(args.tag, env, *sqlite))
            times["postgresql+redis"].append(_time_to_ready(args.tag, env, *postgresql))
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume], env=env, capture_output=True)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                        f"DROP SCHEMA {schema} CASCADE"], check=False)
    result = {
        "tag": args.tag, "size_bytes": inspected["Size"], "gzip_bytes": len(gzip.compress(saved, 6)),
        "ready_seconds": {k: {"median": round(statistics.median(v), 2), "max": round(max(v), 2),
                              "all": [round(t, 2) for t in v]} for k, v in times.items()},
        "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result, indent=2))
    (HERE / "results" / "image.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
