"""keyhouse_client against `keyhouse serve`: the verdict cache, the change feed that keeps it true, and the
middleware guarding the example FastAPI app (examples/guarded_fastapi) and a WSGI app."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from examples.guarded_fastapi.app import OPENAPI, create_app
from keyhouse_client import AsyncKeyhouse, Keyhouse, KeyhouseWSGIMiddleware, VerdictCache


@dataclass
class Platform:
    base: str
    admin: dict
    gateway_key: str
    customer_key: str
    customer_id: str

    def revoke(self, key_id: str) -> None:
        assert httpx.delete(f"{self.base}/user/api-keys/{key_id}", headers=self.admin).status_code == 204

    def key(self, **body) -> dict:
        made = httpx.post(f"{self.base}/keys", json={"name": "k", **body}, headers=self.admin)
        assert made.status_code == 201, made.text
        return made.json()


@pytest.fixture(scope="module")
def keyhouse_serving(served_once) -> tuple[str, dict]:
    """One keyhouse for the module, its organization guarding the documents API: each test makes its own
    keys on it."""
    key, start = served_once
    base = start(KEYHOUSE_RATE_LIMIT="100000/second", KEYHOUSE_ORGANIZATION_RATE_LIMIT="100000/second")
    admin = {"Authorization": f"Bearer {key}"}
    declared = httpx.post(f"{base}/apis", json={"name": "documents", "openapi": OPENAPI.read_text()}, headers=admin)
    assert declared.status_code == 201, declared.text
    return base, admin


@pytest.fixture
def platform(keyhouse_serving) -> Platform:
    base, admin = keyhouse_serving
    made = lambda **body: httpx.post(f"{base}/keys", json=body, headers=admin).json()  # noqa: E731
    gateway = made(name="gateway", permissions=["verifyKey", "listKeyChanges"])
    customer = made(name="cus_42", owner_id="cus_42", permissions=["documents:getDocument"])
    return Platform(base, admin, gateway["key"], customer["key"], customer["id"])


class Counting(httpx.BaseTransport):
    """The real transport, counting verifies and failing the feed on demand."""

    def __init__(self):
        self.inner, self.verifies, self.feed_down = httpx.HTTPTransport(), 0, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/keys/verify"):
            self.verifies += 1
        if self.feed_down and request.url.path.endswith("/keys/changes"):
            raise httpx.ConnectError("feed down", request=request)
        return self.inner.handle_request(request)


def until(condition, timeout: float = 5.0) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "not within the time"
        time.sleep(0.005)
    return time.monotonic() - began


def test_a_cached_verdict_is_evicted_by_the_change_feed_when_the_key_is_revoked(platform):
    transport = Counting()
    with Keyhouse(platform.base, platform.gateway_key, transport=transport) as keyhouse:
        assert keyhouse.wait_until_following()
        ask = lambda: keyhouse.verify(platform.customer_key, api="documents", permissions=["getDocument"])  # noqa: E731
        first = ask()
        assert (first.valid, first.owner_id) == (True, "cus_42")
        assert [ask().valid for _ in range(20)] == [True] * 20 and transport.verifies == 1  # from the cache
        platform.revoke(platform.customer_id)
        took = until(lambda: not ask().valid)
        assert ask().code == "REVOKED" and took < 1.0, took
        assert platform.customer_key not in repr(list(keyhouse.cache._entries.keys()))  # noqa: SLF001


def test_keys_with_credits_reach_keyhouse_every_time(platform):
    metered = platform.key(credits={"remaining": 2})
    transport = Counting()
    with Keyhouse(platform.base, platform.gateway_key, transport=transport) as keyhouse:
        assert keyhouse.wait_until_following()
        assert [keyhouse.verify(metered["key"]).code for _ in range(3)] == ["VALID", "VALID", "USAGE_EXCEEDED"]
        assert transport.verifies == 3


def test_while_the_feed_is_unreachable_the_cache_is_bypassed(platform):
    transport = Counting()
    with Keyhouse(platform.base, platform.gateway_key, transport=transport) as keyhouse:
        assert keyhouse.wait_until_following()
        keyhouse.verify(platform.customer_key)
        keyhouse.verify(platform.customer_key)
        assert transport.verifies == 1
        transport.feed_down = True
        platform.revoke(platform.key()["id"])  # another key's change ends the long-poll in flight; the next fails
        until(lambda: not keyhouse._feed.trusted())  # noqa: SLF001
        platform.revoke(platform.customer_id)
        assert keyhouse.verify(platform.customer_key).code == "REVOKED"  # asked, not served from the cache
        assert transport.verifies == 2


def test_concurrent_verifies_of_one_key_make_one_request(platform):
    async def scenario() -> tuple[list, int]:
        counted = {"verifies": 0}

        async def count(request):
            if request.url.path.endswith("/keys/verify"):
                counted["verifies"] += 1

        async with AsyncKeyhouse(platform.base, platform.gateway_key) as keyhouse:
            keyhouse._http.event_hooks["request"].append(count)  # noqa: SLF001
            assert await keyhouse.wait_until_following()
            verdicts = await asyncio.gather(*(keyhouse.verify(platform.customer_key, api="documents",
                                                              permissions=["getDocument"]) for _ in range(20)))
        return verdicts, counted["verifies"]

    verdicts, asked = asyncio.run(scenario())
    assert {v.code for v in verdicts} == {"VALID"} and asked == 1


def test_429_and_503_are_retried_honouring_retry_after():
    answers = [httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(429, headers={"Retry-After": "0"}),
               httpx.Response(200, json={"valid": True, "code": "VALID", "key_id": "k"})]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/keys/changes"):
            return httpx.Response(200, json={"cursor": "0", "changes": []})
        seen.append(request)
        return answers[len(seen) - 1]

    with Keyhouse("http://keyhouse.test/api/v1", "kh_gateway", caching=False,
                  transport=httpx.MockTransport(handler)) as keyhouse:
        assert keyhouse.verify("kh_presented").code == "VALID"
    assert len(seen) == 3


def test_a_verdict_is_cached_no_longer_than_its_caps():
    from datetime import UTC, datetime, timedelta

    from keyhouse_client import Verdict

    cache = VerdictCache()
    soon = datetime.now(UTC) + timedelta(seconds=10)
    assert cache.ttl(Verdict(True, "VALID")) == 60
    assert 9 < cache.ttl(Verdict(True, "VALID", expires_at=soon)) <= 10
    assert 9 < cache.ttl(Verdict(True, "VALID", secret_valid_until=soon)) <= 10
    assert cache.ttl(Verdict(False, "REVOKED")) == 5
    assert cache.ttl(Verdict(True, "VALID", remaining=3)) == 0
    assert cache.ttl(Verdict(True, "VALID", rate_limit={"limit": 1, "remaining": 0,
                                                         "reset_at": soon.isoformat()})) == 0
    with pytest.raises(ValueError):
        VerdictCache(valid_ttl=61)
    # a lookup that was in flight while its key changed is not kept
    since = cache.mark()
    cache.invalidate("k1")
    cache.put("d", Verdict(True, "VALID", key_id="k1"), since)
    assert cache.get("d") is None
    cache.put("d", Verdict(True, "VALID", key_id="k1"), cache.mark())
    assert cache.get("d") is not None


# ------------------------------------------------------------------ middleware


def test_the_example_fastapi_app_is_guarded_operation_by_operation(platform):
    async def scenario() -> dict:
        keyhouse = AsyncKeyhouse(platform.base, platform.gateway_key)
        app = create_app(keyhouse)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
        got = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://documents.test") as client:
            assert await keyhouse.wait_until_following()
            key = {"X-API-Key": platform.customer_key}
            got["get"] = await client.get("/documents/7", headers=key)
            got["delete"] = await client.delete("/documents/7", headers=key)
            got["no key"] = await client.get("/documents/7")
            got["bad key"] = await client.get("/documents/7", headers={"X-API-Key": "kh_nope"})
            got["open"] = await client.get("/health")
            got["undeclared"] = await client.get("/admin", headers=key)
            platform.revoke(platform.customer_id)
            began = time.monotonic()
            while (await client.get("/documents/7", headers=key)).status_code == 200:
                assert time.monotonic() - began < 1.0, "a revoked key still served after 1 s"
                await asyncio.sleep(0.005)
            got["revoked"] = await client.get("/documents/7", headers=key)
        await keyhouse.aclose()
        return got

    got = asyncio.run(scenario())
    assert got["get"].status_code == 200 and got["get"].json() == {"id": "7", "owner_id": "cus_42"}
    assert (got["delete"].status_code, got["delete"].json()["error"]) == (403, "INSUFFICIENT_PERMISSIONS")
    assert (got["no key"].status_code, got["no key"].json()["error"]) == (401, "MISSING_KEY")
    assert got["bad key"].status_code == 401 and got["bad key"].headers["WWW-Authenticate"] == "Bearer"
    assert got["open"].status_code == 200
    assert got["undeclared"].status_code == 404
    assert (got["revoked"].status_code, got["revoked"].json()["error"]) == (401, "REVOKED")


def test_refusals_carry_retry_after_and_take_the_applications_shape(platform):
    limited = platform.key(permissions=["documents:getDocument"], rate_limit={"limit": 1, "window_seconds": 60})

    def shaped(refusal):
        return refusal.status, {**refusal.headers, "Content-Type": "text/plain"}, f"no: {refusal.code}".encode()

    def application(environ, start_response):
        verdict = environ["keyhouse.verdict"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"hello {verdict.key_id} from {environ['REMOTE_ADDR']}".encode()]

    with Keyhouse(platform.base, platform.gateway_key) as keyhouse:
        guarded = KeyhouseWSGIMiddleware(application, keyhouse=keyhouse, openapi=OPENAPI, api="documents",
                                         on_refusal=shaped)
        with httpx.Client(transport=httpx.WSGITransport(app=guarded, remote_addr="198.51.100.2"),
                          base_url="http://documents.test") as client:
            key = {"X-API-Key": limited["key"]}
            ok = client.get("/documents/1", headers=key)
            assert (ok.status_code, ok.text) == (200, f"hello {limited['id']} from 198.51.100.2")
            refused = client.get("/documents/1", headers=key)
            assert (refused.status_code, refused.text) == (429, "no: RATE_LIMITED")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_keyhouse_out_of_reach_refuses_with_503():
    def down(request):
        raise httpx.ConnectError("down", request=request)

    keyhouse = Keyhouse("http://keyhouse.test/api/v1", "kh_gateway", caching=False, transport=httpx.MockTransport(down))
    guarded = KeyhouseWSGIMiddleware(lambda e, s: [b"served"], keyhouse=keyhouse, openapi=OPENAPI, api="documents")
    with httpx.Client(transport=httpx.WSGITransport(app=guarded), base_url="http://documents.test") as client:
        answer = client.get("/documents/1", headers={"X-API-Key": "kh_anything"})
    assert (answer.status_code, answer.headers["Retry-After"], answer.json()["error"]) == (503, "1", "UNAVAILABLE")
    keyhouse.close()


def test_the_plaintext_key_is_only_ever_in_the_verify_body(platform, caplog):
    import logging

    bodies = []

    class Watching(httpx.BaseTransport):
        def __init__(self):
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request):
            bodies.append((request.url.path, bytes(request.url.query), dict(request.headers), request.content))
            return self.inner.handle_request(request)

    caplog.set_level(logging.DEBUG)
    with Keyhouse(platform.base, platform.gateway_key, transport=Watching()) as keyhouse:
        assert keyhouse.wait_until_following()
        keyhouse.verify(platform.customer_key, api="documents", permissions=["getDocument"])
        threading.Event().wait(0.05)
    secret = platform.customer_key
    carrying = [path for path, query, headers, body in bodies
                if secret in body.decode() or secret in query.decode() or secret in str(headers)]
    assert carrying == ["/api/v1/keys/verify"]
    assert secret not in caplog.text


def test_the_cache_given_is_the_cache_used():
    mine = VerdictCache(1)  # empty, and so falsy: it must still be the one
    feed = httpx.MockTransport(lambda request: httpx.Response(200, json={"cursor": "0", "changes": []}))
    with Keyhouse("http://keyhouse.test/api/v1", "kh_gateway", cache=mine, transport=feed) as keyhouse:
        assert keyhouse.cache is mine
    assert AsyncKeyhouse("http://keyhouse.test/api/v1", "kh_gateway", cache=mine).cache is mine


def served_plainly(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]


def test_out_of_credits_is_429_with_retry_after_at_the_next_refill(platform):
    refilled = platform.key(permissions=["documents:getDocument"],
                            credits={"remaining": 1, "refill": {"amount": 5, "interval_seconds": 600}})
    never = platform.key(permissions=["documents:getDocument"], credits={"remaining": 0})
    application = served_plainly
    with Keyhouse(platform.base, platform.gateway_key) as keyhouse:
        guarded = KeyhouseWSGIMiddleware(application, keyhouse=keyhouse, openapi=OPENAPI, api="documents")
        with httpx.Client(transport=httpx.WSGITransport(app=guarded), base_url="http://documents.test") as client:
            key = {"X-API-Key": refilled["key"]}
            assert client.get("/documents/1", headers=key).status_code == 200
            spent = client.get("/documents/1", headers=key)
            assert (spent.status_code, spent.json()["error"]) == (429, "USAGE_EXCEEDED")
            assert 590 <= int(spent.headers["Retry-After"]) <= 600
            empty = client.get("/documents/1", headers={"X-API-Key": never["key"]})
            assert empty.status_code == 429 and "Retry-After" not in empty.headers  # no refill: no time to name


def test_each_operation_spends_its_own_cost_and_free_ones_spend_nothing(platform):
    """`x-keyhouse-cost` in the application's document, or `costs=` given to the middleware (which wins)."""
    import yaml

    document = yaml.safe_load(OPENAPI.read_text())
    document["paths"]["/documents/{id}"]["get"]["x-keyhouse-cost"] = 0
    document["paths"]["/documents/{id}"]["delete"]["x-keyhouse-cost"] = 5
    customer = platform.key(permissions=["documents:getDocument", "documents:deleteDocument"],
                            credits={"remaining": 3})
    application = served_plainly
    with Keyhouse(platform.base, platform.gateway_key) as keyhouse:
        guarded = KeyhouseWSGIMiddleware(application, keyhouse=keyhouse, openapi=document, api="documents",
                                         costs={"deleteDocument": 2})
        with httpx.Client(transport=httpx.WSGITransport(app=guarded), base_url="http://documents.test") as client:
            key = {"X-API-Key": customer["key"]}
            assert [client.get("/documents/1", headers=key).status_code for _ in range(5)] == [200] * 5
            left = httpx.get(f"{platform.base}/keys/{customer['id']}", headers=platform.admin).json()
            assert left["credits"]["remaining"] == 3  # the free operation spent nothing
            assert client.delete("/documents/1", headers=key).status_code == 200  # costs 2 (costs= wins over 5)
            refused = client.delete("/documents/1", headers=key)
            assert (refused.status_code, refused.json()["error"]) == (429, "USAGE_EXCEEDED")
            assert client.get("/documents/1", headers=key).status_code == 200  # still free with 1 left
    with pytest.raises(ValueError, match="a whole number"):
        KeyhouseWSGIMiddleware(application, keyhouse=None, openapi=document, api="documents",
                               costs={"getDocument": -1})


def test_a_key_that_cannot_read_the_feed_is_said_clearly_at_start_up(caplog):
    """A gateway key holding verifyKey only: the client says once, as an error, what the key lacks, and
    verifies every request (nothing is cached) instead of calling keyhouse unreachable every second."""
    import logging

    feed_requests = []

    def keyhouse_answers(request):
        if request.url.path.endswith("/keys/changes"):
            feed_requests.append(request)
            return httpx.Response(403, json={"type": "about:blank", "title": "Forbidden", "status": 403,
                                             "detail": "This key is not permitted to call listKeyChanges."})
        return httpx.Response(200, json={"valid": True, "code": "VALID", "key_id": "k1"})

    caplog.set_level(logging.INFO, logger="keyhouse_client")
    keyhouse = Keyhouse("http://keyhouse.test/api/v1", "kh_gateway", transport=httpx.MockTransport(keyhouse_answers))
    try:
        assert not keyhouse.wait_until_following(timeout=0.5)
        assert keyhouse.verify("kh_customer").valid and keyhouse.verify("kh_customer").valid
    finally:
        keyhouse.close()
    said = [r for r in caplog.records if r.name == "keyhouse_client"]
    assert len(said) == 1 and said[0].levelno == logging.ERROR, [r.getMessage() for r in said]
    assert "listKeyChanges" in said[0].getMessage() and "403" in said[0].getMessage()
    assert len(feed_requests) == 1  # asked again only after FEED_REFUSED_BACKOFF, not every second


def test_the_client_says_it_is_typed():
    """PEP 561: the client ships `py.typed`, so a type checker reads its annotations."""
    from importlib.resources import files

    assert files("keyhouse_client").joinpath("py.typed").is_file()


class InProcessKeyhouse:
    """keyhouse as the client sees it, answered in this process (no server): the feed answers at once with
    nothing new, and each verify takes a moment, so that concurrent ones overlap. Counts the verifies."""

    def __init__(self, verdict: dict):
        self.verdict, self.verifies = verdict, 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/keys/changes"):
            return httpx.Response(200, json={"cursor": "1", "changes": []})
        self.verifies += 1
        time.sleep(0.05)
        return httpx.Response(200, json=self.verdict)

    async def answer_async(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/keys/changes"):
            await asyncio.sleep(0.2 if "after" in request.url.params else 0)  # a long-poll, shortened
            return httpx.Response(200, json={"cursor": "1", "changes": []})
        self.verifies += 1
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=self.verdict)


VALID = {"valid": True, "code": "VALID", "key_id": "k1", "permissions": []}
METERED = {**VALID, "remaining": 5}  # a key with credits: every use must reach keyhouse


@pytest.mark.parametrize(("verdict", "requests"), [(VALID, 1), (METERED, 8)], ids=["cacheable", "metered"])
def test_both_clients_share_one_flight_per_key_and_question_in_process(verdict, requests):
    """The sync and the async client, one core: 8 concurrent verifies of one key make one request when the
    verdict may be cached, and every one reaches keyhouse when it may not."""
    sync_keyhouse = InProcessKeyhouse(verdict)
    with Keyhouse("http://keyhouse.test/api/v1", "kh_gateway",
                  transport=httpx.MockTransport(sync_keyhouse.answer)) as keyhouse:
        assert keyhouse.wait_until_following(timeout=2)
        threads = [threading.Thread(target=keyhouse.verify, args=("kh_customer",)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sync_keyhouse.verifies == requests

    async def scenario() -> int:
        async_keyhouse = InProcessKeyhouse(verdict)
        keyhouse = AsyncKeyhouse("http://keyhouse.test/api/v1", "kh_gateway",
                                 transport=httpx.MockTransport(async_keyhouse.answer_async))
        assert await keyhouse.wait_until_following(timeout=2)
        verdicts = await asyncio.gather(*(keyhouse.verify("kh_customer") for _ in range(8)))
        assert {v.code for v in verdicts} == {"VALID"}
        await keyhouse.aclose()
        return async_keyhouse.verifies

    assert asyncio.run(scenario()) == requests
