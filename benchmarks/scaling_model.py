"""What 100,000 verifies a second across regions asks of keyhouse: a simulation, where this machine cannot
measure it (docs/scaling.md explains the model and its inputs).

    .venv/bin/python benchmarks/scaling_model.py                       # the defaults below
    .venv/bin/python benchmarks/scaling_model.py --keys 1000000 --changes 50

Gateways in each region verify through keyhouse-client, whose cache keeps a valid verdict up to 60 s and a
refusal up to 5 s, and drops a key's verdicts when the change feed names it. Requests come from a fixed
population of keys with Zipf-distributed popularity (a few keys make most traffic, as with API customers).
Every `--changes` a second, a random key changes (revoked, rerolled, updated): each region's caches drop it.
Keys with credits or a rate limit of their own are never cached (`--uncached` of the traffic).

The simulation counts, per region, the verifies that reach keyhouse (cache misses) over simulated time, and
turns them into keyhouse workers with the per-worker verify rate measured here (results/databases.json),
halved for headroom. It also states what one writing region carries: every change, and every credit spent.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
from itertools import accumulate
from pathlib import Path

HERE = Path(__file__).resolve().parent


def zipf_weights(n: int, s: float) -> list[float]:
    return list(accumulate(1 / (rank ** s) for rank in range(1, n + 1)))


def simulate(args) -> dict:
    rng = random.Random(args.seed)  # noqa: S311 - a model, not a secret
    cumulative = zipf_weights(args.keys, args.zipf)
    total = cumulative[-1]
    per_region = args.rate / args.regions
    step = 1.0 / per_region  # seconds between two requests of one region
    expires = [dict() for _ in range(args.regions)]  # key -> when its cached verdict ends
    misses = [0] * args.regions
    requests = 0
    now, next_change = 0.0, 0.0
    while now < args.seconds:
        while next_change <= now:  # a change: every region's caches drop the key
            changed = bisect.bisect_left(cumulative, rng.random() * total)
            for cache in expires:
                cache.pop(changed, None)
            next_change += rng.expovariate(args.changes) if args.changes else float("inf")
        counting = now >= args.valid_ttl  # the first valid_ttl seconds fill the caches: the steady state after
        for region in range(args.regions):
            key = bisect.bisect_left(cumulative, rng.random() * total)
            requests += counting
            if rng.random() < args.uncached:
                misses[region] += counting
                continue
            if expires[region].get(key, -1.0) > now:
                continue
            misses[region] += counting
            expires[region][key] = now + (args.refusal_ttl if rng.random() < args.refused else args.valid_ttl)
        now += step
    return {"requests": requests, "misses": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100_000, help="verifies a second, all regions")
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--keys", type=int, default=200_000, help="keys presented")
    parser.add_argument("--zipf", type=float, default=1.1, help="popularity skew of the keys")
    parser.add_argument("--changes", type=float, default=20, help="key changes a second (revoke, reroll, update)")
    parser.add_argument("--uncached", type=float, default=0.05,
                        help="share of traffic on keys with credits or a limit of their own (never cached)")
    parser.add_argument("--refused", type=float, default=0.01, help="share of verdicts that are refusals")
    parser.add_argument("--valid-ttl", type=float, default=60.0)
    parser.add_argument("--refusal-ttl", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated seconds (after the warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # Simulating 100,000 requests a second for a minute of warm-up is slow in Python: the rate is scaled down
    # and the key population with it (the hit rate depends on requests per key per TTL, which this keeps).
    scale = min(1.0, 5_000 / args.rate)
    model = argparse.Namespace(**{**vars(args), "rate": args.rate * scale, "keys": max(1000, int(args.keys * scale)),
                                  "changes": args.changes * scale, "seconds": args.valid_ttl + args.seconds})
    found = simulate(model)
    miss_rate = sum(found["misses"]) / found["requests"]
    measured = json.loads((HERE / "results" / "databases.json").read_text())["figures"]["verify"]
    per_worker = measured["postgresql_rps"]
    to_keyhouse = args.rate * miss_rate
    workers = to_keyhouse / (per_worker / 2)
    print(json.dumps({
        "inputs": {k: v for k, v in vars(args).items() if k != "seed"},
        "simulated_at_scale": round(scale, 4),
        "cache_miss_rate": round(miss_rate, 4),
        "verifies_reaching_keyhouse_per_second": round(to_keyhouse),
        "per_region": round(to_keyhouse / args.regions),
        "keyhouse_verify_per_worker_measured_here": per_worker,
        "workers_needed_at_half_load": round(workers, 1),
        "per_region_workers": round(workers / args.regions, 1),
        "writing_region_writes_per_second": {
            "changes": args.changes, "credit_spends": round(args.rate * args.uncached),
            "note": "credit spends are single-row UPDATEs; they do not take the organization's row unless "
                    "they exhaust the key"},
    }, indent=1))


if __name__ == "__main__":
    main()
