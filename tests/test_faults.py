"""Faults under load: what keyhouse acknowledged survives a worker killed outright."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx


def _workers(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]


def test_a_worker_killed_mid_stream_loses_no_acknowledged_key(served):
    key, start = served
    base = start("--workers", "2", "--allow-unshared-limits", KEYHOUSE_RATE_LIMIT="100000/second")
    server = start.processes[-1]
    acknowledged, failures, unexpected, made = [], [], [], threading.Event()

    def stream(n: int) -> None:
        client = httpx.Client(timeout=10)
        for i in range(30):
            try:
                r = client.post(f"{base}/api-keys", json={"description": f"stream {n}-{i}"},
                                headers={"REB-APIKEY": key})
            except httpx.TransportError:  # the connection died with its worker: nothing was promised
                failures.append(i)
                client = httpx.Client(timeout=10)
                continue
            if r.status_code not in (201, 503):  # 503: the database was busy; nothing was promised
                unexpected.append(r.text)
            if r.status_code == 201:
                acknowledged.append((r.json()["id"], r.json()["secretKey"]))
                if len(acknowledged) >= 20:
                    made.set()

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    assert made.wait(30)
    victim = _workers(server.pid)[0]
    os.kill(victim, signal.SIGKILL)  # mid-stream, with requests in flight
    for t in threads:
        t.join(60)
    assert server.poll() is None  # the server itself lives on
    assert not unexpected

    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(acknowledged) >= 20
    for key_id, secret in acknowledged:  # every key that got a 201 exists and authenticates
        assert httpx.get(f"{base}/api-keys/{key_id}", headers={"REB-APIKEY": key}).status_code == 200
        assert httpx.get(f"{base}/api-keys", params={"limit": 1}, headers={"REB-APIKEY": secret}).status_code == 200
    listed = httpx.get(f"{base}/api-keys", params={"limit": 1}, headers={"REB-APIKEY": key})
    assert int(listed.headers["Pagination-Total"]) >= len(acknowledged) + 1  # the counter kept up too
