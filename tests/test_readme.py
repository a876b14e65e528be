"""The README's walk-throughs run: each `# =>` line of a block is what the command before it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block(heading: str) -> str:
    """The first ```sh block of the README section `heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, f"no sh block under {heading}"
    return found.group(1)


def test_the_guard_your_own_api_walk_through_runs_as_written(served, tmp_path):
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"the README's walk-through needs {tool}, and CI must run it")
            pytest.skip(f"the README's walk-through needs {tool}")
    key, start = served
    script = block("Guard your own API")
    expected = [line[len("# => "):] for line in script.splitlines() if line.startswith("# => ")]
    assert len(expected) >= 8
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "BASE": start(), "ADMIN_KEY": key}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == expected
    assert key not in run.stdout  # the walk-through prints no secret
