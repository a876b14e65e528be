"""`keyhouse serve` as a user runs it: a real server on loopback."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import database_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": database_url(tmp_path),
           "KEYHOUSE_SECRET_FILE": str(tmp_path / "secret")}
    env.pop("KEYHOUSE_FORWARDED_ALLOW_IPS", None)
    boot = subprocess.run([sys.executable, "-m", "keyhouse.cli", "bootstrap", "--organization", "o",
                           "--email", "a@o.test"], env=env, capture_output=True, text=True, check=True)
    key = json.loads(boot.stdout.strip().splitlines()[-1])["key"]
    servers = []

    def start(*flags):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "keyhouse.cli", "serve", "--port", str(port), *flags],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        servers.append(proc)
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                return base
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(proc.stderr.read().decode() if proc.poll() is not None else "server did not start")

    yield key, start
    for proc in servers:
        proc.terminate()
        proc.wait(timeout=10)


def _fenced_key(base, key):
    r = httpx.post(f"{base}/api-keys", json={"description": "fenced", "allowedIps": ["203.0.113.5"]},
                   headers={"REB-APIKEY": key})
    assert r.status_code == 201
    return r.json()["secretKey"]


def test_forwarded_headers_are_ignored_by_default(served):
    key, start = served
    base = start()
    fenced = _fenced_key(base, key)
    r = httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": fenced, "X-Forwarded-For": "203.0.113.5"})
    assert r.status_code == 403


def test_a_configured_proxy_names_the_client(served):
    key, start = served
    base = start("--forwarded-allow-ips", "127.0.0.1")
    fenced = _fenced_key(base, key)
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": fenced, "X-Forwarded-For": "203.0.113.5"}).status_code == 200
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": fenced, "X-Forwarded-For": "198.51.100.1"}).status_code == 403
