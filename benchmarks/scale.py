"""Does a list's first page, and verify, stay as fast with 1,000,000 keys as with 1,000?

Loads two organizations into one PostgreSQL schema (1,000 keys and --big keys, with `keyhouse keys load`'s
bulk insert), then times through the app in-process: the first page (limit 20) of every sort the billing
list offers, both directions, and `POST /keys/verify` of a real key of each organization. Prints a
table and a JSON line; the ratios are big over small (target: <= 1.2).

    .venv/bin/python benchmarks/scale.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from sqlalchemy import create_engine, text

from keyhouse import keys
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.store import api_keys, organizations
from keyhouse.store.session import Store

SORTS = ["id", "description", "type", "apiUser", "createdTime", "updatedTime"]
SECRET = b"benchmark-secret"


def median_ms(call, repeat: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="a PostgreSQL URL; a schema of its own is made in it")
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the schema (and its data) afterwards")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(args.database)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{args.database}?options=-csearch_path%3D{schema}"
    try:
        store = Store(url)
        store.upgrade()
        actors = {}
        for label, count in (("small", args.small), ("big", args.big)):
            with store.session() as s:
                org = organizations.create_organization(s, label).id
                user = organizations.create_user(s, org, f"{label}@bench.test", "admin").id
                new = keys.new(SECRET)
                key = new.plaintext
                api_keys.issue_key(s, api_keys.Hashed(new.hash, new.hint), actor=None, organization_id=org,
                                   user_id=user, description="Ärger bench", api_user="Élodie Ærøskøbing")
            actors[label] = key
            env = {**os.environ, "KEYHOUSE_DATABASE_URL": url, "KEYHOUSE_SECRET": SECRET.decode()}
            subprocess.run([sys.executable, "-m", "keyhouse.cli", "keys", "load", "--organization", org, "--user", user,
                            "--count", str(count)], env=env, check=True)
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
            ids = {label: connection.execute(text(
                "SELECT k.id FROM api_keys k JOIN organizations o ON o.id = k.organization_id "
                "WHERE o.name = :label AND k.description = 'synthetic 0000042'"), {"label": label}).scalar_one()
                for label in actors}
        store.dispose()

        app = create_app(Settings(database_url=url, secret=SECRET, rate_limit="1000000/second",
                                  organization_rate_limit="1000000/second"))
        results = []
        with app.test_client() as client:
            for sort in [s for field in SORTS for s in (field, f"-{field}")]:
                row = {"case": f"list sort={sort}"}
                for label, key in actors.items():
                    def call(key=key, sort=sort):
                        r = client.get(f"/api/v1/api-keys?limit=20&sort={sort}", headers={"REB-APIKEY": key})
                        assert r.status_code == 200, r.text
                    row[label] = median_ms(call, args.repeat)
                results.append(row)
            # The filters compare folded text through an index per field, spelled here in another case
            # than stored (Unicode too): one key matches each, and then 1% of the keys (whose total is
            # counted, so that case grows with the matches, not with the collection).
            for field, value, label in (("id", None, "1 match"), ("description", "ÄRGER BENCH", "1 match"),
                                        ("apiUser", "ÉLODIE ÆRØSKØBING", "1 match"), ("apiUser", "USER42", "1%")):
                row = {"case": f"list filter={field} ({label})"}
                for label, key in actors.items():
                    wanted = value or ids[label].upper()

                    def call(key=key, wanted=wanted, field=field):
                        r = client.get("/api/v1/api-keys", params={"limit": 20, "filter": f"{field}:{wanted}"},
                                       headers={"REB-APIKEY": key})
                        assert r.status_code == 200 and r.json(), r.text
                    row[label] = median_ms(call, args.repeat)
                results.append(row)
            row = {"case": "verify"}
            for label, key in actors.items():
                def call(key=key):
                    r = client.post("/api/v1/keys/verify", json={"key": key},
                                    headers={"Authorization": f"Bearer {key}"})
                    assert r.json()["valid"], r.text
                row[label] = median_ms(call, args.repeat)
            results.append(row)
        print(f"{'case':34} {args.small:>10,} keys {args.big:>12,} keys   ratio")
        for row in results:
            row["ratio"] = round(row["big"] / row["small"], 2)
            print(f"{row['case']:34} {row['small']:13.2f} ms {row['big']:15.2f} ms   {row['ratio']:.2f}")
        print(json.dumps({"small": args.small, "big": args.big, "cores": os.cpu_count(), "results": results}))
    finally:
        if not args.keep:
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
