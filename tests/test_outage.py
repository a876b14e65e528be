"""A database outage: 503 in the family's envelope within a bounded time, and service again when it
returns, without a restart. PostgreSQL over a TCP forwarder the test can cut and restore."""

import asyncio
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from tests.conftest import POSTGRES_URL, SECRET, add_actor, add_organization, database_url, migrated

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="an outage needs a database server: the PostgreSQL leg")


class Forwarder:
    """127.0.0.1:<port> -> the PostgreSQL server, in a thread of its own; cut() drops every connection."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.port = None
        self.writers = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self.writers |= {client_writer, server_writer}
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))

    async def _start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self):
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    def start(self):
        self._run(self._start())

    def cut(self):
        self._run(self._stop())


def test_outage_is_503_then_service_resumes(tmp_path):
    direct = migrated(database_url(tmp_path))
    parts = urlsplit(direct)
    forwarder = Forwarder(parts.hostname, parts.port or 5432)
    forwarder.start()
    through = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{forwarder.port}"))
    app = create_app(Settings(database_url=through, secret=SECRET))
    admin = add_actor(app, add_organization(app, "acme"), "a@acme.test", "admin")
    with app.test_client() as client:
        assert client.get("/api/v1/api-keys", headers=admin.billing).status_code == 200

        forwarder.cut()
        for path, headers, check in (
            ("/api-keys", admin.billing, lambda r: r.json()["status"] == 503),
            ("/users/auth/keys", admin.cloud, lambda r: r.headers["x-cloud-error-codes"] == "root.service_unavailable"),
            ("/user/api-keys", admin.bearer, lambda r: r.json()["type"] == "service_unavailable"),
        ):
            started = time.monotonic()
            r = client.get(f"/api/v1{path}", headers=headers)
            assert r.status_code == 503 and check(r) and r.headers["Retry-After"] == "5"
            assert time.monotonic() - started < 15  # bounded: connect and pool timeouts, never a hang

        forwarder.start()  # the database is back, on the same address
        r = client.get("/api/v1/api-keys", headers=admin.billing)
        assert r.status_code == 200
        assert client.post("/api/v1/api-keys", json={"description": "after"}, headers=admin.billing).status_code == 201
    app.runtime.store.dispose()
