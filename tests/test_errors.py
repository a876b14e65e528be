"""What Connexion and the middleware refuse comes back in the family's envelope, never problem+json."""

import pytest

from tests.conftest import count_keys
from tests.helpers import API


def test_unknown_route_is_404_in_the_guessed_family(client, world):
    cloud = client.get(f"{API}/users/x/auth/nothing", headers=world.acme_admin.cloud)
    assert cloud.status_code == 404 and cloud.headers["x-cloud-error-codes"] == "root.not_found"
    workspace = client.get(f"{API}/user/nothing", headers=world.acme_admin.bearer)
    assert workspace.status_code == 404 and workspace.json()["type"] == "not_found"
    other = client.get(f"{API}/nothing")
    assert other.status_code == 404 and other.json()["status"] == 404
    for r in (cloud, workspace, other):
        assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api-keys", "GET, HEAD, POST"),  # HEAD wherever GET is served (issue 12)
    ("PATCH", "/user/api-keys", "GET, HEAD, POST"),
    ("PATCH", "/deployments/traffic-filter/rulesets/abc", "DELETE, GET, HEAD, PUT"),
    ("PUT", "/users/auth/keys", "DELETE, GET, HEAD, POST"),
    ("PUT", "/user/api-keys/self", "DELETE"),  # the resource /self, not /{id}
])
def test_wrong_method_is_405_with_the_full_allow_header(client, world, method, path, allow):
    r = client.request(method, f"{API}{path}", headers=world.acme_admin.bearer)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.headers["content-type"] == "application/json"


def test_oversized_body_is_413_and_stores_nothing(client, world, app):
    before = count_keys(app)
    big = {"description": "x" * 70_000}
    for path, headers, check in (
        ("/api-keys", world.acme_admin.billing, lambda b: b["status"] == 413),
        ("/user/api-keys", world.acme_admin.bearer, lambda b: b["type"] == "payload_too_large"),
        ("/users/auth/keys", world.acme_admin.cloud, lambda b: b["errors"][0]["code"] == "root.payload_too_large"),
    ):
        r = client.post(f"{API}{path}", json=big, headers=headers)
        assert r.status_code == 413 and check(r.json())
    assert count_keys(app) == before


def test_chunked_body_cannot_slip_past_the_cap(client, world, app):
    def chunks():
        yield b'{"description": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = client.post(f"{API}/api-keys", content=chunks(),
                    headers={**world.acme_admin.billing, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert count_keys(app) == 3


def test_small_chunked_body_is_accepted(client, world, app):
    def chunks():
        yield b'{"description": '
        yield b'"chunked"}'

    r = client.post(f"{API}/api-keys", content=chunks(),
                    headers={**world.acme_admin.billing, "Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["description"] == "chunked"


def test_wrong_media_type_is_415(client, world):
    r = client.post(f"{API}/api-keys", content=b"description=x",
                    headers={**world.acme_admin.billing, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["status"] == 415


def test_unknown_charset_is_never_a_server_error(client, world):
    # Connexion ignores the charset parameter and reads JSON as UTF-8, which RFC 8259 requires anyway.
    r = client.post(f"{API}/api-keys", content=b'{"description": "x"}',
                    headers={**world.acme_admin.billing, "Content-Type": "application/json; charset=klingon"})
    assert r.status_code == 201 and r.json()["description"] == "x"


def test_invalid_utf8_is_a_client_error(client, world):
    r = client.post(f"{API}/user/api-keys", content=b'{"name": "\xff\xfe"}',
                    headers={**world.acme_admin.bearer, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["type"] == "invalid_request"


def test_non_numeric_content_length_is_400(app, world):
    import asyncio

    sent = []

    async def run():
        scope = {"type": "http", "method": "POST", "path": f"{API}/api-keys", "raw_path": b"/api/v1/api-keys",
                 "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
                 "http_version": "1.1", "headers": [(b"content-length", b"lots"), (b"content-type",
                                                                                   b"application/json"),
                                                    (b"reb-apikey", world.acme_admin.key.encode())]}

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 400


def test_openapi_document_and_swagger_ui_are_served(client):
    spec = client.get(f"{API}/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"] == "3.0.3"
    ui = client.get(f"{API}/ui/")
    assert ui.status_code == 200 and "swagger" in ui.text.lower()


def test_deeply_nested_json_is_a_client_error(client, world, app):
    before = count_keys(app)
    nested = "[" * 100_000 + "]" * 100_000  # under the body cap as bytes, far past any parser's depth
    for body in (nested, '{"description": ' + nested + "}"):
        r = client.post("/api/v1/api-keys", content=body, headers={**world.acme_admin.billing,
                                                                    "Content-Type": "application/json"})
        assert r.status_code in (400, 413), r.text
    r = client.post("/api/v1/api-keys", content='{"description": ' + "[" * 2000 + "]" * 2000 + "}",
                    headers={**world.acme_admin.billing, "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    assert count_keys(app) == before
