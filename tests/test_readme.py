"""The README's walk-throughs run: each `# =>` line of a block is what the command before it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _free_port

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block(heading: str, which: int = 0) -> str:
    """The first (or `which`) ```sh block of the README section `heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(found) > which, f"no sh block {which} under {heading}"
    return found[which]


def _tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"the README's walk-through needs {tool}, and CI must run it")
            pytest.skip(f"the README's walk-through needs {tool}")


def _runs_as_written(script: str, directory: Path, key: str, base: str, least: int, **env: str) -> None:
    expected = [line[len("# => "):] for line in script.splitlines() if line.startswith("# => ")]
    assert len(expected) >= least
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=directory, capture_output=True,
                         text=True, env={**os.environ, "BASE": base, "ADMIN_KEY": key, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == expected
    assert key not in run.stdout  # the walk-through prints no secret


def test_the_guard_your_own_api_walk_through_runs_as_written(served, tmp_path):
    _tools("curl", "jq")
    key, start = served
    _runs_as_written(block("Guard your own API"), tmp_path, key, start(), least=8)


def test_the_usage_and_leaks_walk_through_runs_as_written(served, tmp_path):
    """The stand-in for GitHub's key is made as the first block says, and the server started with it (its
    last line), then the walk-through runs against it."""
    _tools("curl", "jq", "openssl")
    key, start = served
    setup = block("Usage, and keys found in public").strip().splitlines()
    assert setup[-1] == ("KEYHOUSE_GITHUB_SECRET_SCANNING_KEYS=github-keys.json "
                         "KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true keyhouse serve")
    subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(setup[:-1])], cwd=tmp_path, check=True)
    base = start(KEYHOUSE_GITHUB_SECRET_SCANNING_KEYS=str(tmp_path / "github-keys.json"),
                 KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true")
    _runs_as_written(block("Usage, and keys found in public", 1), tmp_path, key, base, least=8,
                     PYTHON=sys.executable, HOOK_PORT=str(_free_port()))
