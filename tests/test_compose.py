"""deploy/compose.yaml run as its head says, with podman-compose, on images built here from Debian's packages
(keyhouse's by scripts/image, PostgreSQL's and Redis's by scripts/image-service): up, the migration's
one-shot, bootstrap, the README's walk-through against the published port, and down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import _free_port
from tests.test_image import _ready, podman
from tests.test_readme import _runs_as_written, block

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def test_the_compose_file_serves_keyhouse_with_postgresql_and_redis(keyhouse_image, tmp_path):
    tag, env = keyhouse_image
    if shutil.which("podman-compose") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and podman-compose is missing: .ci/run installs it")
        pytest.skip("podman-compose is not installed (Debian: podman-compose)")
    suffix = uuid.uuid4().hex[:8]
    images = {}
    for service in ("postgres", "redis"):
        images[service] = f"localhost/keyhouse-test-{service}:{suffix}"
        built = subprocess.run(["bash", "scripts/image-service", service, images[service]], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=900)
        assert built.returncode == 0, built.stderr[-3000:]
    port = _free_port()
    project = f"khtest{suffix}"
    compose_env = {**env, "POSTGRES_PASSWORD": f"pw-{suffix}", "KEYHOUSE_SECRET": f"secret-{suffix}",
                   "KEYHOUSE_IMAGE": tag, "POSTGRES_IMAGE": images["postgres"], "REDIS_IMAGE": images["redis"],
                   "KEYHOUSE_PUBLISH": f"127.0.0.1:{port}"}

    def compose(*args, timeout=300, check=True):
        done = subprocess.run(["podman-compose", "-p", project, "-f", str(COMPOSE), *args], env=compose_env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done

    try:
        compose("up", "-d")
        base = f"http://127.0.0.1:{port}/api/v1"
        _ready(base, time.monotonic(), within=180)
        migrated = podman(env, "logs", f"{project}_migrate_1").stdout
        assert json.loads(migrated.strip().splitlines()[-1])["revision"], migrated
        booted = compose("run", "--rm", "-T", "migrate", "bootstrap", "--organization", "acme",
                         "--email", "you@acme.test")
        # podman-compose 1.0.3 prints the podman commands it runs on stdout too: bootstrap's line is the JSON one
        printed = [line for line in booted.stdout.splitlines() if line.startswith("{")]
        assert printed, booted.stdout[-2000:]
        key = json.loads(printed[-1])["key"]
        _runs_as_written(block("Guard your own API"), tmp_path, key, base, least=8)
    finally:
        compose("down", "-v", check=False)
        # podman-compose 1.0.3's down leaves the project's network (deploy/compose.yaml's head says so)
        podman(env, "network", "rm", f"{project}_default", check=False)
        for image in images.values():
            podman(env, "rmi", "-f", image, check=False)
    assert not [c for c in podman(env, "ps", "-a", "--format", "{{.Names}}").stdout.split() if project in c]
    assert not [v for v in podman(env, "volume", "ls", "--format", "{{.Name}}").stdout.split() if project in v]
