"""Clients generated from the contract work against a running keyhouse.

openapi-python-client builds a client from openapi/keyhouse.yaml, without a warning, and that client
creates, lists, gets and revokes keys in all three families against `keyhouse serve`. openapi-generator
(python) must at least generate without an error, and what it writes must compile. Nothing generated
is kept in the repository: it is made afresh here.
"""

from __future__ import annotations

import compileall
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "keyhouse.yaml"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def client_package(tmp_path_factory):
    """The generated client, importable as `keyhouse_generated` (`keyhouse_client` is the hand-written one)."""
    where = tmp_path_factory.mktemp("generated")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hook
    run = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(SPEC), "--meta", "none",
                          "--output-path", str(where / "keyhouse_generated")],
                         env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("keyhouse_generated")
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == "keyhouse_generated" or m.startswith("keyhouse_generated.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def serving(served_once):
    """One server for the module: each test makes and removes what it uses through its family."""
    key, start = served_once
    return start(), key


def _client(package, base: str, key: str, header: str, prefix: str):
    return package.AuthenticatedClient(base_url=base, token=key, auth_header_name=header, prefix=prefix,
                                       raise_on_unexpected_status=True)


def test_the_cloud_family_through_the_generated_client(client_package, serving):
    from keyhouse_generated.api.cloud_api_keys import create_api_key, delete_api_key, get_api_key, get_api_keys
    from keyhouse_generated.models import ApiKeyResponse, ApiKeysResponse, BasicFailedReply, CreateApiKeyRequest

    base, key = serving
    cloud = _client(client_package, base, key, "Authorization", "ApiKey")

    made = create_api_key.sync(client=cloud, body=CreateApiKeyRequest(description="made by a generated client"))
    assert isinstance(made, ApiKeyResponse) and made.key.startswith("kh_")
    listed = get_api_keys.sync(client=cloud)
    assert isinstance(listed, ApiKeysResponse)
    assert made.id in [k.id for k in listed.keys]
    assert all(not k.key for k in listed.keys)  # the plaintext is shown once, at creation
    got = get_api_key.sync(made.id, client=cloud)
    assert isinstance(got, ApiKeyResponse) and got.description == "made by a generated client"

    assert delete_api_key.sync_detailed(made.id, client=cloud).status_code == 200
    gone = get_api_key.sync_detailed(made.id, client=cloud)
    assert gone.status_code == 404 and isinstance(gone.parsed, BasicFailedReply)
    assert gone.parsed.errors[0].code == "api_keys.key_not_found"
    revoked = _client(client_package, base, made.key, "Authorization", "ApiKey")
    assert get_api_keys.sync_detailed(client=revoked).status_code == 401


def test_the_billing_family_through_the_generated_client(client_package, serving):
    from keyhouse_generated.api.billing_api_keys import (
        delete_api_key_resource,
        get_api_key_collection,
        get_api_key_resource,
        post_api_key,
    )
    from keyhouse_generated.models import BillingApiKey, BillingApiKeyInput, Problem

    base, key = serving
    billing = _client(client_package, base, key, "REB-APIKEY", "")

    made = post_api_key.sync(client=billing, body=BillingApiKeyInput(description="billing, generated",
                                                                     allowed_ips=["127.0.0.1"]))
    assert isinstance(made, BillingApiKey) and made.secret_key.startswith("kh_")
    page = get_api_key_collection.sync_detailed(client=billing, limit=50)
    assert page.status_code == 200
    assert made.id in [k.id for k in page.parsed]
    assert all(not k.secret_key for k in page.parsed)
    assert int(page.headers["Pagination-Total"]) == len(page.parsed)
    got = get_api_key_resource.sync(made.id, client=billing)
    assert isinstance(got, BillingApiKey) and got.allowed_ips == ["127.0.0.1"]

    assert delete_api_key_resource.sync_detailed(made.id, client=billing).status_code == 204
    gone = get_api_key_resource.sync_detailed(made.id, client=billing)
    assert gone.status_code == 404 and isinstance(gone.parsed, Problem)
    assert httpx.get(f"{base}/api-keys", headers={"REB-APIKEY": made.secret_key}).status_code == 401


def test_the_workspace_family_through_the_generated_client(client_package, serving):
    from keyhouse_generated.api.workspace_api_keys import (
        create_my_api_key,
        get_my_api_key,
        list_my_api_keys,
        revoke_my_api_key,
    )
    from keyhouse_generated.models import Permission, WorkspaceApiKey, WorkspaceApiKeyCreated, WorkspaceApiKeyInput

    base, key = serving
    workspace = _client(client_package, base, key, "Authorization", "Bearer")

    made = create_my_api_key.sync(client=workspace, body=WorkspaceApiKeyInput(
        name="workspace, generated", allowed_scopes=[Permission.LISTMYAPIKEYS]))
    assert isinstance(made, WorkspaceApiKeyCreated) and made.key.startswith("kh_")
    listed = list_my_api_keys.sync(client=workspace)
    mine = next(k for k in listed if k.id == made.id)
    assert mine.masked_key == made.masked_key and made.key not in str(mine.to_dict())
    got = get_my_api_key.sync(made.id, client=workspace)
    assert isinstance(got, WorkspaceApiKey) and got.active and got.allowed_scopes == ["listMyApiKeys"]

    assert revoke_my_api_key.sync_detailed(made.id, client=workspace).status_code == 204
    assert get_my_api_key.sync(made.id, client=workspace).active is False
    assert httpx.get(f"{base}/user/api-keys", headers={"Authorization": f"Bearer {made.key}"}).status_code == 401


def test_guarding_a_platforms_own_api_through_the_generated_client(client_package, serving):
    """The issue's day, in keyhouse's own family: declare a documents API, make a key for cus_42 holding
    getDocument with 3 credits, verify it until the credits run out."""
    from keyhouse_generated.api.api_definitions import create_platform_api
    from keyhouse_generated.api.key_verification import verify_key
    from keyhouse_generated.api.keys import create_key, get_key
    from keyhouse_generated.models import KeyCreated, KeyCreditsType0, KeyInput, VerifyKeyRequest

    from tests.helpers import DOCUMENTS

    # A nullable object schema is a union to the generator: KeyCredits | None is KeyCreditsType0 | None.
    base, key = serving
    admin = _client(client_package, base, key, "Authorization", "Bearer")
    # The body's schema is a oneOf (a document, or scopes), which the generator types as Any: a dict it is.
    declared = create_platform_api.sync(client=admin, body={"name": "documents", "openapi": DOCUMENTS})
    assert declared.permissions == ["deleteDocument", "getDocument", "getHealth"]
    made = create_key.sync(client=admin, body=KeyInput(name="cus_42", owner_id="cus_42",
                                                       permissions=["documents:getDocument"],
                                                       credits_=KeyCreditsType0(remaining=3)))
    assert isinstance(made, KeyCreated) and made.credits_.remaining == 3
    verdicts = [verify_key.sync(client=admin, body=VerifyKeyRequest(key=made.key, api="documents",
                                                                    permissions=["getDocument"]))
                for _ in range(4)]
    assert [(v.code.value, v.remaining) for v in verdicts] == [("VALID", 2), ("VALID", 1), ("VALID", 0),
                                                               ("USAGE_EXCEEDED", 0)]
    assert verdicts[0].owner_id == "cus_42"
    refused = verify_key.sync(client=admin, body=VerifyKeyRequest(key=made.key, api="documents",
                                                                  permissions=["deleteDocument"]))
    assert refused.code.value == "INSUFFICIENT_PERMISSIONS"
    assert get_key.sync(made.id, client=admin).credits_.remaining == 0


def test_openapi_generator_generates_a_python_client_without_errors(tmp_path):
    if shutil.which("java") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openapi-generator needs Java, and CI must run this test")
        pytest.skip("openapi-generator needs Java")
    run = subprocess.run([str(BIN / "openapi-generator-cli"), "generate", "-i", str(SPEC), "-g", "python",
                          "-o", str(tmp_path / "out"), "--package-name", "keyhouse_og"],
                         capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "ERROR" not in output, [line for line in output.splitlines() if "ERROR" in line]
    package = tmp_path / "out" / "keyhouse_og"
    assert (package / "api" / "billing_api_keys_api.py").exists()
    assert compileall.compile_dir(str(package), quiet=1)
