"""keyhouse at another commit beside this checkout: one scenario under wrk, interleaved rounds, medians.

For "this change costs the hot path nothing": `python benchmarks/ab.py --base HEAD~1 --scenario verify`.
Both sides are served as a user would (`keyhouse serve`, one worker, SQLite), each on a dataset of its own
made by its own CLI (the two may be at different schema revisions), with the same keys, limits and wrk
settings; only the code differs. The base is checked out with `git worktree` and run through PYTHONPATH
against this virtualenv's packages, so a base whose dependencies differ needs them installed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as suite  # noqa: E402 - benchmarks/run.py: the suite's server and wrk helpers


def side(name: str, source: Path, work: Path, keys: int) -> tuple[suite.Server, dict]:
    env = {**os.environ, "PYTHONPATH": str(source / "src"), "KEYHOUSE_SECRET": suite.SECRET, **suite.LIMITS,
           "KEYHOUSE_DATABASE_URL": f"sqlite:///{work}/{name}.db"}
    admin = suite.keyhouse_cli(env, "bootstrap", "--organization", name, "--email", f"admin@{name}.bench")
    member = suite.keyhouse_cli(env, "users", "create", "--organization", admin["organization_id"],
                                "--email", f"member@{name}.bench", "--role", "member")
    suite.keyhouse_cli(env, "keys", "load", "--organization", admin["organization_id"], "--user", member["user_id"],
                       "--count", str(keys - 2))
    server = suite.Server(name, [sys.executable, "-m", "keyhouse.cli", "serve"], env, 1, port=suite.free_port())
    return server, {"admin_key": admin["key"], "member_key": member["key"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (a git revision)")
    parser.add_argument("--scenario", choices=["verify", "list"], default="verify")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyhouse-ab-") as tmp:
        work = Path(tmp)
        base_tree = work / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=suite.ROOT, check=True,
                       capture_output=True)
        try:
            sides = [side("base", base_tree, work, args.keys), side("head", suite.ROOT, work, args.keys)]
            runs: dict[str, list[suite.Run]] = {"base": [], "head": []}
            for server, keys in sides:
                server.start(work, keys["admin_key"])
            try:
                for round_ in range(args.rounds):
                    ordered = sides if round_ % 2 == 0 else sides[::-1]  # neither side always goes first
                    for server, keys in ordered:
                        run = suite.wrk(server, args.scenario, args.seconds, args.connections, keys, work, round_)
                        assert run.non_2xx == 0 and run.socket_errors == 0, run
                        runs[server.name].append(run)
            finally:
                for server, _ in sides:
                    server.stop()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=suite.ROOT, check=False)
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=suite.ROOT, capture_output=True,
                         text=True).stdout.strip()
    lines = [f"{args.scenario}, {args.keys:,} keys, wrk -t1 -c{args.connections}, {args.rounds} x {args.seconds} s "
             f"interleaved, {os.cpu_count()} cores; base = {args.base} ({rev}), head = the working tree"]
    medians = {}
    for name, measured in runs.items():
        medians[name] = statistics.median(r.rps for r in measured)
        lines.append(f"  {name}: {medians[name]:8.0f} req/s (rounds: {', '.join(f'{r.rps:.0f}' for r in measured)}), "
                     f"p50 {statistics.median(r.p50_ms for r in measured):.2f} ms, "
                     f"p99 {statistics.median(r.p99_ms for r in measured):.2f} ms")
    lines.append(f"  head / base: {medians['head'] / medians['base']:.3f}")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
