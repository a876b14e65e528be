"""`keyhouse serve` as a user runs it: a real server on loopback (the `served` fixture, in conftest)."""

import httpx


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
