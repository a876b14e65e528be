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
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": fenced,
                                                  "X-Forwarded-For": "203.0.113.5"}).status_code == 200
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": fenced,
                                                  "X-Forwarded-For": "198.51.100.1"}).status_code == 403


# ------------------------------------------------------------------ abuse at the HTTP level


def _raw(base: str, data: bytes, timeout: float = 5) -> bytes:
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:  # the server may close before it has read everything: that is the point
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def _rss_kb(pid: int) -> int:
    from pathlib import Path

    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")).split()[1])


def test_an_endless_header_is_431_and_memory_stays_bounded(served):
    _, start = served
    base = start()
    pid = start.processes[-1].pid
    before = _rss_kb(pid)
    head = b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    for _ in range(3):
        answer = _raw(base, head + b"a" * 20_000_000)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    assert _raw(base, b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    assert _rss_kb(pid) - before < 20_000  # 60 MB of headers sent; not kept
    assert httpx.get(f"{base}/healthz").status_code == 200
    # A head under the bound is fine.
    ok = _raw(base,
              b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")


def test_smuggling_shaped_requests_are_refused_and_the_service_stays_up(served):
    _, start = served
    base = start()
    both = (b"POST /api/v1/keys/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    twice = b"POST /api/v1/keys/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"
    for attempt in (both, twice):
        answer = _raw(base, attempt)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1  # nothing smuggled behind it was answered
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_slow_clients_do_not_starve_the_others(served):
    import socket
    import time
    from urllib.parse import urlsplit

    _, start = served
    base = start()
    address = urlsplit(base)
    slow = []
    for _ in range(200):  # each sends half a request head and then nothing
        s = socket.create_connection((address.hostname, address.port))
        s.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(s)
    try:
        started = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for s in slow:
            s.close()


def test_the_head_limit_counts_head_bytes_only_on_every_operation_with_a_body(served):
    """A head and a body near the body cap, sent in one write (so they arrive in one read): the head
    limit must not count the body. At the cap the request is served; one byte over, it is 413 in the
    family's envelope, never 431. Every operation with a request body, read from the spec."""
    import json
    import re

    from keyhouse.config import Settings
    from tests.documented import assert_documented
    from tests.victims import OPERATIONS

    key, start = served
    base = start()
    cap = Settings.model_fields["max_body_bytes"].default  # the default the served server runs with
    values = {"association_type": "deployment"}
    wrong = []
    for method, path, op in OPERATIONS:
        if "requestBody" not in op:
            continue
        url = "/api/v1" + re.sub(r"{([^}]+)}", lambda m: values.get(m.group(1), "x"), path)
        for size in (cap, cap + 1):
            body = b"{}" + b" " * (size - 2)  # valid JSON of exactly `size` bytes
            head = (f"{method.upper()} {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
            answer = _raw(base, head.encode() + body)
            status = int(answer.split(b" ", 2)[1])
            if size == cap and status in (413, 431):
                wrong.append((op["operationId"], size, status))
            if size > cap:
                if status != 413:
                    wrong.append((op["operationId"], size, status))
                    continue
                headers, _, payload = answer.partition(b"\r\n\r\n")
                response = httpx.Response(413, content=payload, headers=[
                    tuple(line.decode().split(": ", 1)) for line in headers.split(b"\r\n")[1:]])
                assert_documented(op, response)
                json.loads(payload)
    assert wrong == []
