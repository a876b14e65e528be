"""Webhooks: an organization's endpoints told of its keys' lives, signed as Standard Webhooks specifies, and
checked here by a real receiving server that verifies every delivery with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from keyhouse.store.models import WebhookDelivery, utcnow
from tests.conftest import add_actor, add_organization, make_app
from tests.helpers import API, create_key, problem_of

EVENTS = ["key.created", "key.updated", "key.revoked", "key.leaked"]


class Receiver:
    """An endpoint on this machine: verifies each delivery's signature with each secret it is given, keeps
    what it took, and answers `failing` 500s before it takes anything."""

    def __init__(self):
        self.secrets: list[str] = []
        self.taken: list[dict] = []  # {"id", "body", "verified_with"}
        self.failing = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                if receiver.failing:
                    receiver.failing -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                verified = []
                for secret in receiver.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                        verified.append(secret)
                    except WebhookVerificationError:
                        pass
                receiver.taken.append({"id": headers["webhook-id"], "body": json.loads(body),
                                       "verified_with": verified})
                self.send_response(204 if verified else 400)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 resets a burst of deliveries: tried again later

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str]]:
        return [(t["body"]["type"], t["body"]["data"].get("key_id")) for t in self.taken]


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


@pytest.fixture(scope="module")
def hooked_app(tmp_path_factory):
    """An app whose endpoints may be on this machine (the receiver's); its sender is driven by the tests."""
    application = make_app(tmp_path_factory.mktemp("webhooks"), webhook_allow_private_addresses=True)
    yield application
    application.runtime.store.dispose()


@pytest.fixture
def hooked(hooked_app):
    with hooked_app.test_client() as client:
        organization = add_organization(hooked_app, "hooked")
        yield client, add_actor(hooked_app, organization, f"admin-{organization}@hooked.test", "admin")


def send(app, now=None) -> int:
    """One round of the sender: the outbox dispatched, what is due sent (and settled)."""
    async def once():
        async with httpx.AsyncClient(timeout=5) as client:
            return await app.runtime.webhooks.once(client, now)
    return asyncio.run(once())


def register(client, admin, url: str, events=EVENTS) -> dict:
    answer = client.post(f"{API}/webhooks", json={"url": url, "events": events}, headers=admin.bearer)
    assert answer.status_code == 201, answer.text
    return answer.json()


def deliveries(client, admin, webhook_id: str) -> list[dict]:
    answer = client.get(f"{API}/webhooks/{webhook_id}/deliveries", headers=admin.bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_keys_life_is_delivered_signed_and_in_order(hooked_app, hooked, receiver):
    client, admin = hooked
    endpoint = register(client, admin, receiver.url)
    assert endpoint["secret"].startswith("whsec_")
    receiver.secrets = [endpoint["secret"]]
    key = create_key(client, admin, name="told")
    assert client.patch(f"{API}/keys/{key['id']}", json={"name": "renamed"}, headers=admin.bearer).status_code == 200
    assert client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer).status_code == 204
    for _ in range(4):  # one of a key's events at a time: each waits for the one before
        send(hooked_app)
    assert receiver.events() == [("key.created", key["id"]), ("key.updated", key["id"]), ("key.revoked", key["id"])]
    assert all(t["verified_with"] == [endpoint["secret"]] for t in receiver.taken)
    made = deliveries(client, admin, endpoint["id"])
    assert [(d["status"], d["attempts"], d["event"]["type"]) for d in made] == [
        ("delivered", 1, "key.revoked"), ("delivered", 1, "key.updated"), ("delivered", 1, "key.created")]
    assert [t["id"] for t in receiver.taken] == [f"msg_{d['id']}" for d in reversed(made)]
    assert "secret" not in client.get(f"{API}/webhooks", headers=admin.bearer).json()[0]  # shown once


def test_a_refused_delivery_is_tried_again_and_holds_back_the_keys_later_events(hooked_app, hooked, receiver):
    client, admin = hooked
    endpoint = register(client, admin, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.failing = 2
    key = create_key(client, admin, name="retried")
    assert client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer).status_code == 204
    send(hooked_app)
    first = deliveries(client, admin, endpoint["id"])[-1]
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    send(hooked_app)  # not due yet (5 s later), and the revocation waits behind it
    assert receiver.taken == []
    send(hooked_app, utcnow() + timedelta(seconds=6))
    send(hooked_app, utcnow() + timedelta(seconds=40))
    send(hooked_app, utcnow() + timedelta(seconds=41))
    assert receiver.events() == [("key.created", key["id"]), ("key.revoked", key["id"])]
    assert [d["attempts"] for d in deliveries(client, admin, endpoint["id"])] == [1, 3]


def test_a_delivery_refused_for_a_day_has_failed_and_can_be_replayed(hooked_app, hooked, receiver):
    client, admin = hooked
    endpoint = register(client, admin, receiver.url, ["key.created"])
    receiver.secrets = [endpoint["secret"]]
    receiver.failing = 1
    create_key(client, admin, name="late")
    send(hooked_app)  # the outbox dispatched; the first try refused
    with hooked_app.runtime.store.session() as s:  # made a day ago
        s.execute(update(WebhookDelivery).where(WebhookDelivery.webhook_id == endpoint["id"])
                  .values(created_at=utcnow() - timedelta(days=1, minutes=1)))
    receiver.failing = 1
    send(hooked_app, utcnow() + timedelta(seconds=6))
    failed = deliveries(client, admin, endpoint["id"])[0]
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    replayed = client.post(f"{API}/webhooks/{endpoint['id']}/deliveries/{failed['id']}/replay", headers=admin.bearer)
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    send(hooked_app)
    assert [t["body"]["type"] for t in receiver.taken] == ["key.created"]
    assert deliveries(client, admin, endpoint["id"])[0]["status"] == "delivered"


def test_a_rotated_secret_keeps_signing_beside_the_new_one_for_a_day(hooked_app, hooked, receiver):
    client, admin = hooked
    endpoint = register(client, admin, receiver.url, ["key.created"])
    rotated = client.post(f"{API}/webhooks/{endpoint['id']}/secret", headers=admin.bearer)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != endpoint["secret"]
    receiver.secrets = [endpoint["secret"], new]
    create_key(client, admin, name="signed twice")
    send(hooked_app)
    assert receiver.taken[0]["verified_with"] == [endpoint["secret"], new]
    create_key(client, admin, name="signed once")
    send(hooked_app, utcnow() + timedelta(days=1, seconds=1))  # the overlap over
    assert receiver.taken[1]["verified_with"] == [new]
    events = client.get(f"{API}/audit/events", params={"target_id": endpoint["id"]}, headers=admin.bearer).json()
    assert [e["action"] for e in events] == ["webhook.secret_rotated", "webhook.created"]


def test_endpoints_inside_this_network_are_refused_unless_allowed(tmp_path, receiver):
    app = make_app(tmp_path)  # KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES unset
    with app.test_client() as client:
        organization = add_organization(app, "careful")
        admin = add_actor(app, organization, "admin@careful.test", "admin")
        for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                    "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://[fd00::1]/hook"):
            refused = client.post(f"{API}/webhooks", json={"url": url, "events": EVENTS}, headers=admin.bearer)
            assert "not a public address" in problem_of(refused, 422)["detail"] or "this machine" in refused.text, url
        assert client.get(f"{API}/webhooks", headers=admin.bearer).json() == []
        # A name is checked as it is sent, against what it resolves to then.
        endpoint = register(client, admin, "http://inside.example/hook", ["key.created"])

        async def inside(host: str) -> list[str]:
            return ["10.0.0.5"] if host == "inside.example" else []

        app.runtime.webhooks.resolve = inside
        create_key(client, admin, name="never sent")
        send(app)
        tried = deliveries(client, admin, endpoint["id"])[0]
        assert (tried["status"], tried["last_status_code"]) == ("pending", None)
        assert "inside.example resolves to 10.0.0.5" in tried["last_error"]
    app.runtime.store.dispose()


def test_only_administrators_manage_endpoints_and_other_organizations_see_none(client, world, receiver):
    admin = world.acme_admin
    endpoint = register(client, admin, "https://platform.example/hooks")
    assert client.get(f"{API}/webhooks", headers=world.acme_member.bearer).status_code == 403
    assert client.get(f"{API}/webhooks", headers=world.globex_admin.bearer).json() == []
    assert client.delete(f"{API}/webhooks/{endpoint['id']}", headers=world.globex_admin.bearer).status_code == 404
    assert client.delete(f"{API}/webhooks/{endpoint['id']}", headers=admin.bearer).status_code == 204
    assert client.get(f"{API}/webhooks", headers=admin.bearer).json() == []


@pytest.mark.slow
def test_nothing_is_lost_when_the_sending_server_is_killed(served, receiver):
    """A server killed with -9 while its deliveries wait for an endpoint that is away: the next server
    sends every one of them, once the endpoint is back (the outbox and the deliveries are in the database,
    not in the process)."""
    key, start = served
    base = start(KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true")
    admin = {"Authorization": f"Bearer {key}"}
    receiver.failing = 10_000  # away: every try refused
    endpoint = httpx.post(f"{base}/webhooks", headers=admin, json={"url": receiver.url, "events": ["key.created"]})
    assert endpoint.status_code == 201, endpoint.text
    receiver.secrets = [endpoint.json()["secret"]]
    made = [httpx.post(f"{base}/keys", headers=admin, json={"name": f"k{i}"}).json()["id"] for i in range(20)]
    deadline = time.monotonic() + 10
    while receiver.failing > 10_000 - 20 and time.monotonic() < deadline:  # until every one was tried once
        time.sleep(0.1)
    assert receiver.failing <= 10_000 - 20
    start.processes[-1].send_signal(signal.SIGKILL)
    start.processes[-1].wait(timeout=10)
    receiver.failing = 0  # back
    start(KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true")
    # Each is sent at its next try: 5 s after its first, or 30 s after a second made before the kill (a
    # slow machine), and a claim the killed server held lapses within 30 s.
    deadline = time.monotonic() + 60
    while len({key_id for _, key_id in receiver.events()}) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {key_id for _, key_id in receiver.events()} == set(made)
    assert all(t["verified_with"] for t in receiver.taken)


def test_an_endpoint_is_told_once_of_each_key_that_expires_within_its_lead_time(hooked_app, hooked, receiver):
    client, admin = hooked
    answer = client.post(f"{API}/webhooks", json={"url": receiver.url, "events": ["key.expiring"],
                                                  "expiring_lead_seconds": 3600}, headers=admin.bearer)
    assert answer.status_code == 201 and answer.json()["expiring_lead_seconds"] == 3600, answer.text
    receiver.secrets = [answer.json()["secret"]]
    soon = create_key(client, admin, name="soon", expires_at=(utcnow() + timedelta(minutes=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"))
    create_key(client, admin, name="later", expires_at=(utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    create_key(client, admin, name="never")
    hooked_app.runtime.webhooks._scheduled_at = None  # noqa: SLF001 - look now, not a minute after the last
    send(hooked_app)
    send(hooked_app)
    assert receiver.events() == [("key.expiring", soon["id"])]
    assert receiver.taken[0]["body"]["data"]["expires_at"] == soon["expires_at"]
    hooked_app.runtime.webhooks._scheduled_at = None  # noqa: SLF001
    send(hooked_app)  # looked for again: told once
    assert len(receiver.taken) == 1


def test_an_endpoint_is_told_when_a_keys_credits_run_low_once_until_they_are_topped_up(hooked_app, hooked, receiver):
    client, admin = hooked
    answer = client.post(f"{API}/webhooks", json={"url": receiver.url, "events": ["key.credits_low"],
                                                  "credits_low_threshold": 2}, headers=admin.bearer)
    assert answer.status_code == 201 and answer.json()["credits_low_threshold"] == 2, answer.text
    receiver.secrets = [answer.json()["secret"]]
    key = create_key(client, admin, name="metered", credits={"remaining": 4})
    create_key(client, admin, name="plenty", credits={"remaining": 100})

    def look():
        hooked_app.runtime.webhooks._scheduled_at = None  # noqa: SLF001 - look now, not a minute after the last
        send(hooked_app)

    look()
    assert receiver.taken == []  # 4 left: not low
    for _ in range(2):
        verdict = client.post(f"{API}/keys/verify", json={"key": key["key"]}, headers=admin.bearer).json()
        assert verdict["code"] == "VALID"
    look()
    look()
    assert receiver.events() == [("key.credits_low", key["id"])]
    assert receiver.taken[0]["body"]["data"]["credits_remaining"] == 2
    assert client.patch(f"{API}/keys/{key['id']}", json={"credits": {"remaining": 2}},
                        headers=admin.bearer).status_code == 200  # topped up (to as few): told again
    look()
    assert receiver.events() == [("key.credits_low", key["id"])] * 2


def test_an_organization_holds_at_most_the_endpoints_the_contract_lists(app, client, world):
    from keyhouse.api.webhooks import MAX_ENDPOINTS
    from keyhouse.store import webhooks

    admin = world.acme_admin
    with app.runtime.store.session() as s:  # made in the store: a hundred requests would meet the key's 100/s
        for i in range(MAX_ENDPOINTS):
            webhooks.create_webhook(s, admin.organization_id, f"https://platform.example/hooks/{i}", ["key.created"],
                                    None, app.runtime.webhooks.sealer.seal("whsec_AAAA"), actor=None, now=utcnow(),
                                    expiring_lead_seconds=3600, credits_low_threshold=10)
    refused = client.post(f"{API}/webhooks", json={"url": "https://platform.example/one-more", "events": EVENTS},
                          headers=admin.bearer)
    assert problem_of(refused, 409)["detail"].startswith(f"The organization has {MAX_ENDPOINTS} endpoints")
    assert len(client.get(f"{API}/webhooks", headers=admin.bearer).json()) == MAX_ENDPOINTS
