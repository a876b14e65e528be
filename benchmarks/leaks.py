"""Leak intake (issue 25): how long a report of 1,000 tokens takes, from GitHub's POST to its answer.

    .venv/bin/python benchmarks/leaks.py [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

One `keyhouse serve` (one worker) trusting a stand-in for GitHub's secret scanning key. Each round makes
1,000 keys through the API, then posts one signed report of all 1,000 (every one a true positive, each
recorded, revoked and put in the change feed in one transaction: the most a report can ask), and one of
1,000 well-formed tokens that are no key (every one looked up, none found). Goal: answered within 1 s.
Writes results/leaks-<database>.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from run import BIN, HERE, LIMITS, SECRET, Server, free_port
from usage import _database, _fresh, _request

from keyhouse import keys

RESULTS = HERE / "results"
TOKENS = 1000


def _report(server: Server, signer: ec.EllipticCurvePrivateKey, tokens: list[str]) -> tuple[float, list[str]]:
    body = json.dumps([{"token": t, "type": "bench_key", "url": "https://github.com/o/r/blob/1/x", "source": "content"}
                       for t in tokens]).encode()
    signature = base64.b64encode(signer.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    request = urllib.request.Request(server.url("/api/v1/leaks/github"), data=body, method="POST", headers={
        "Content-Type": "application/json", "Github-Public-Key-Identifier": "bench",
        "Github-Public-Key-Signature": signature})
    began = time.perf_counter()
    with urllib.request.urlopen(request) as answer:
        labels = [item["label"] for item in json.load(answer)]
    return (time.perf_counter() - began) * 1000, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a PostgreSQL URL (a schema is made in it); a SQLite file otherwise")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    args.work = Path(tempfile.mkdtemp(prefix="keyhouse-leaks-"))
    signer = ec.generate_private_key(ec.SECP256R1())
    pem = signer.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    trusted = args.work / "github-keys.json"
    trusted.write_text(json.dumps({"public_keys": [{"key_identifier": "bench", "key": pem, "is_current": True}]}))
    url = _database(args, "leaks")
    admin = _fresh(url)
    env = {**os.environ, **LIMITS, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET,
           "KEYHOUSE_GITHUB_SECRET_SCANNING_KEYS": str(trusted)}
    (args.work / "logs").mkdir()
    server = Server("leaks", [str(BIN / "keyhouse"), "serve", "--workers", "1"], env, 1, port=free_port())
    load = os.getloadavg()
    server.start(args.work / "logs", admin["key"])
    found, strangers = [], []
    try:
        for round_ in range(args.rounds):
            made = [json.loads(_request(server, "POST", "/api/v1/keys", admin["key"], {"name": f"r{round_}-{i}"})[1])
                    ["key"] for i in range(TOKENS)]
            ms, labels = _report(server, signer, made)
            assert labels == ["true_positive"] * TOKENS, labels[:3]
            found.append(ms)
            ms, labels = _report(server, signer, [keys.generate() for _ in range(TOKENS)])
            assert labels == ["false_positive"] * TOKENS
            strangers.append(ms)
            print(f"  round {round_ + 1}: 1,000 keys found {found[-1]:.0f} ms; 1,000 strangers {ms:.0f} ms",
                  file=sys.stderr, flush=True)
    finally:
        server.stop()
    result = {"began": datetime.now(UTC).isoformat(timespec="seconds"), "load_before": load,
              "database": "postgresql" if args.database else "sqlite", "cpus": os.cpu_count(),
              "1000 keys found and revoked, ms": {"p50": round(statistics.median(found), 1),
                                                  "max": round(max(found), 1)},
              "1000 tokens of no key, ms": {"p50": round(statistics.median(strangers), 1),
                                            "max": round(max(strangers), 1)}}
    (RESULTS / f"leaks-{result['database']}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
