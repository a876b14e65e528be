"""What operators get: health checks, metrics, JSON logs with request ids, and a listed configuration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from keyhouse import keys
from keyhouse.config import ENVIRONMENT, Settings, readme_table
from tests.conftest import make_app

ROOT = Path(__file__).resolve().parents[1]


def _metric(client, name: str, **labels) -> float:
    """The value of one sample on /metrics (0 when it is not there yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in client.get("/api/v1/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------ health


def test_healthz_and_readyz_answer_without_a_credential(client):
    assert client.get("/api/v1/healthz").json() == {"status": "ok"}
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok" and body["checks"].items() >= {"database": "ok", "schema": "current"}.items()
    assert body["checks"]["change_feed"] in ("polling", "listening", "deaf")


def test_readyz_is_503_while_the_schema_is_out_of_date(tmp_path):
    app = make_app(tmp_path)  # its own: this test puts the schema's version back, which the shared app's must not
    client = app.test_client()
    with app.runtime.store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"].items() >= {"database": "ok", "schema": "out_of_date"}.items()
    assert client.get("/api/v1/healthz").status_code == 200  # the process itself is fine


def test_readyz_is_503_while_the_database_is_unreachable(app, client, monkeypatch):
    def unreachable():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(app.runtime.store, "revision", unreachable)
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"].items() >= {"database": "unreachable", "schema": "unknown"}.items()


# ------------------------------------------------------------------ metrics


def test_metrics_count_requests_failures_and_rate_limits(tmp_path):
    app = make_app(tmp_path, rate_limit="3/minute")
    from tests.conftest import add_actor, add_organization

    actor = add_actor(app, add_organization(app, "metered"), "m@metered.test", "admin")
    with app.test_client() as client:
        before = {
            "ok": _metric(client, "keyhouse_requests_total", operation="getApiKeyCollection", status="200"),
            "refused": _metric(client, "keyhouse_requests_total", operation="getApiKeyCollection", status="401"),
            "malformed": _metric(client, "keyhouse_authentication_failures_total", reason="malformed key"),
            "unknown": _metric(client, "keyhouse_authentication_failures_total", reason="not found"),
            "limited": _metric(client, "keyhouse_rate_limited_total", scope="key"),
            "latency": _metric(client, "keyhouse_request_duration_seconds_count", operation="getApiKeyCollection"),
        }
        for _ in range(3):
            assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": actor.key}).status_code == 200
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": actor.key}).status_code == 429
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": "kh_not-a-key"}).status_code == 401
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": keys.generate()}).status_code == 401

        assert _metric(client, "keyhouse_requests_total", operation="getApiKeyCollection", status="200") \
            == before["ok"] + 3
        assert _metric(client, "keyhouse_requests_total", operation="getApiKeyCollection", status="401") \
            == before["refused"] + 2
        assert _metric(client, "keyhouse_authentication_failures_total", reason="malformed key") \
            == before["malformed"] + 1
        assert _metric(client, "keyhouse_authentication_failures_total", reason="not found") == before["unknown"] + 1
        assert _metric(client, "keyhouse_rate_limited_total", scope="key") == before["limited"] + 1
        assert _metric(client, "keyhouse_request_duration_seconds_count", operation="getApiKeyCollection") \
            == before["latency"] + 6
        exposed = client.get("/api/v1/metrics").text
    assert actor.key not in exposed and actor.organization_id not in exposed


def test_metrics_are_summed_over_workers(served):
    _, start = served
    base = start("--workers", "2", "--allow-unshared-limits")
    with httpx.Client() as client:
        for _ in range(40):  # new connections, so that both workers take some
            assert httpx.get(f"{base}/healthz").status_code == 200
        scraped = client.get(f"{base}/metrics").text
    line = next(line for line in scraped.splitlines()
                if line.startswith('keyhouse_requests_total{operation="getHealth",status="200"}'))
    assert float(line.rsplit(" ", 1)[1]) == 40


# ------------------------------------------------------------------ logs


def test_request_ids_are_taken_from_the_client_or_made(client):
    assert client.get("/api/v1/healthz", headers={"X-Request-Id": "trace-42.a:b"}).headers["X-Request-Id"] \
        == "trace-42.a:b"
    made = client.get("/api/v1/healthz", headers={"X-Request-Id": "no spaces allowed"}).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/api/v1/nowhere").headers["X-Request-Id"])  # errors too


def test_logs_are_json_lines_with_request_ids_and_no_credential(served, tmp_path):
    key, start = served
    base = start()
    made = [key]
    admin = {"Authorization": f"Bearer {key}"}
    made.append(httpx.post(f"{base}/users/auth/keys", json={"description": "c"},
                           headers={"Authorization": f"ApiKey {key}"}).json()["key"])
    billing = httpx.post(f"{base}/api-keys", json={"description": "b"}, headers={"REB-APIKEY": key}).json()
    made.append(billing["secretKey"])
    workspace = httpx.post(f"{base}/user/api-keys", json={"name": "w"}, headers=admin).json()
    made.append(workspace["key"])
    # Refusals, which are logged and counted: a revoked key, keys in the wrong places, a bad body.
    assert httpx.delete(f"{base}/api-keys/{billing['id']}", headers={"REB-APIKEY": key}).status_code == 204
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": billing["secretKey"]}).status_code == 401
    assert httpx.get(f"{base}/api-keys?api_key={made[1]}", headers={"REB-APIKEY": key}).status_code == 400
    assert httpx.post(f"{base}/keys/verify", json={"key": made[3], "extra": made[2]}, headers=admin).status_code == 422
    assert httpx.post(f"{base}/keys/verify", json={"key": made[3]},
                      headers={**admin, "X-Request-Id": "gateway-check-1"}).json()["valid"] is True

    # The access line is written once the answer has gone: wait for the last one (bounded).
    log_file = next(tmp_path.glob("server-*.log"))
    for _ in range(50):
        log = log_file.read_text()
        if "gateway-check-1" in log:
            break
        time.sleep(0.1)
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "keyhouse.access"]
    assert len(access) >= 8 and all(re.fullmatch(r"[A-Za-z0-9._:-]+", e["request_id"]) for e in access)
    verify = next(e for e in access if e["request_id"] == "gateway-check-1")
    assert (verify["operation"], verify["status"], verify["method"]) == ("verifyKey", 200, "POST")

    secret = (tmp_path / "secret").read_bytes().strip()
    for plaintext in made:
        assert plaintext not in log
        assert keys.hash_key(secret, plaintext) not in log
    assert "kh_" not in log and "authorization" not in log.lower() and "reb-apikey" not in log.lower()


# ------------------------------------------------------------------ configuration


def test_every_environment_variable_is_listed_in_help_and_readme():
    read = set()
    for source in (ROOT / "src" / "keyhouse").rglob("*.py"):
        read |= set(re.findall(r"\b(KEYHOUSE_[A-Z_]+|PROMETHEUS_MULTIPROC_DIR|OTEL_[A-Z_]+)\b", source.read_text()))
    listed = {name for name, _, _ in ENVIRONMENT}
    # Every variable the code names is listed; the settings' own are listed from their declarations.
    assert read - {"KEYHOUSE_TEST_POSTGRES_URL", "KEYHOUSE_TEST_REDIS_URL"} <= listed, read - listed
    assert {f"KEYHOUSE_{name.upper()}" for name in Settings.model_fields if name != "previous_secrets"} <= listed
    shown = subprocess.run([sys.executable, "-m", "keyhouse.cli", "--help"], capture_output=True, text=True,
                           check=True).stdout
    readme = (ROOT / "README.md").read_text()
    for name in listed:
        assert name in shown, name
    assert readme_table() in readme  # the README's table is the declarations', made by config.readme_table
