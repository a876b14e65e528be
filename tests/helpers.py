"""What many test modules share: the API's base path, requests that make things, and what an answer
must look like in each family. (Fixtures are conftest's; the OWASP victims are tests/victims.py.)"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

API = "/api/v1"


def on_postgresql(app, needs: str) -> None:
    """Skips a test of what only PostgreSQL has (`needs`, the reason) on the SQLite leg. The PostgreSQL leg
    runs it, and scripts/test fails under CI=true when PostgreSQL is missing, so no skip hides a service."""
    import pytest

    if app.runtime.store.engine.dialect.name != "postgresql":
        pytest.skip(f"{needs}: the PostgreSQL leg runs this")

# ------------------------------------------------------------------ the organization's own API, declared

DOCUMENTS = """\
openapi: 3.0.3
info: {title: Documents, version: 1.0.0}
security: [{oauth: ['documents:read']}]
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://auth.example.test/token
          scopes: {'documents:read': Read documents, 'documents:write': Change documents}
paths:
  /documents/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      operationId: getDocument
      tags: [Documents]
      responses: {'200': {description: The document.}}
    delete:
      operationId: deleteDocument
      tags: [Documents]
      security: [{oauth: ['documents:write']}]
      responses: {'204': {description: Deleted.}}
  /health:
    get:
      operationId: getHealth
      security: []
      responses: {'200': {description: Up.}}
"""



def declare(client, actor, **body):
    return client.post(f"{API}/apis", json=body, headers=actor.bearer)


def verify(client, actor, key, **asked):
    answer = client.post(f"{API}/keys/verify", json={"key": key, **asked}, headers=actor.bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()


def the_rest_of_the_day(client, admin, key: str) -> None:
    """A key holding documents:getDocument only: deleteDocument is refused; then the API's new definition
    no longer has getDocument, and the key loses it."""
    assert verify(client, admin, key, permissions=["documents:deleteDocument"])["code"] == "INSUFFICIENT_PERMISSIONS"
    without = DOCUMENTS.replace("operationId: getDocument", "operationId: readDocument")
    assert client.put(f"{API}/apis/documents", json={"openapi": without}, headers=admin.bearer).status_code == 200
    assert verify(client, admin, key, permissions=["documents:getDocument"])["code"] == "INSUFFICIENT_PERMISSIONS"


# ------------------------------------------------------------------ keys, in each shape

def create_key(client, actor, **body):
    answer = client.post(f"{API}/keys", json=body, headers=actor.bearer)
    assert answer.status_code == 201, answer.text
    return answer.json()


def create_billing_key(client, actor, **fields):
    r = client.post(f"{API}/api-keys", json={"description": "k", **fields}, headers=actor.billing)
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------------------------ errors, in each family's envelope

def problem_of(response, status):
    assert response.status_code == status
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def errors_of(response, code):
    """The response is a cloud error carrying `code`, in the body and in the header."""
    assert response.headers["x-cloud-error-codes"] == code
    body = response.json()
    assert [e["code"] for e in body["errors"]] == [code]
    assert body["errors"][0]["message"]
    return body["errors"][0]


RULESET = {"name": "offices", "type": "ip", "region": "us-east-1",
           "rules": [{"source": "192.0.2.0/24", "description": "Berlin"}, {"source": "2001:db8::1"}]}


# ------------------------------------------------------------------ GitHub's secret scanning, as a test plays it

# A key pair standing for one of GitHub's secret scanning keys: the shared app trusts its public half
# (conftest writes it in GitHub's document format); reports signed with the private half are GitHub's.
GITHUB_KEY = ec.generate_private_key(ec.SECP256R1())
GITHUB_KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


def github_keys_file(directory) -> str:
    """GitHub's document of secret scanning keys (api.github.com/meta/public_keys/secret_scanning), ours."""
    pem = GITHUB_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    path = directory / "github-secret-scanning-keys.json"
    path.write_text(json.dumps({"public_keys": [{"key_identifier": GITHUB_KEY_ID, "key": pem, "is_current": True}]}))
    return str(path)


def github_signed(body: bytes, key=None) -> dict:
    """The headers GitHub sends with a report: which key, and its signature of the exact body."""
    signature = (key or GITHUB_KEY).sign(body, ec.ECDSA(hashes.SHA256()))
    return {"Github-Public-Key-Identifier": GITHUB_KEY_ID, "Github-Public-Key-Signature":
            base64.b64encode(signature).decode(), "Content-Type": "application/json"}


def report_leaks(client, reports: list[dict]):
    body = json.dumps(reports).encode()
    return client.post(f"{API}/leaks/github", content=body, headers=github_signed(body))
