"""Rotating the server secret: keys hashed under the retired secret keep working and move to the new one."""

from __future__ import annotations

from sqlalchemy import select

from keyhouse import keys
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.store.models import ApiKey
from tests.conftest import SECRET, add_actor, add_organization, database_url, migrated

OLD, NEW = SECRET, b"the-secret-after-rotation"  # add_actor hashes under the tests SECRET


def _app(url: str, secret: bytes, *previous: bytes):
    return create_app(Settings(database_url=url, secret=secret, previous_secrets=previous))


def _stored_hash(app, key_id: str) -> str:
    with app.runtime.store.session() as s:
        return s.scalars(select(ApiKey.key_hash).where(ApiKey.id == key_id)).one()


def test_keys_survive_a_rotation_and_are_rehashed_on_first_use(tmp_path):
    url = migrated(database_url(tmp_path))
    before = _app(url, OLD)
    admin = add_actor(before, add_organization(before, "rotating"), "r@rotating.test", "admin")
    with before.test_client() as client:
        used = client.post("/api/v1/api-keys", json={"description": "used"}, headers={"REB-APIKEY": admin.key}).json()
        idle = client.post("/api/v1/api-keys", json={"description": "idle"}, headers={"REB-APIKEY": admin.key}).json()
        token = client.post("/api/v1/auth/tokens", json={"expires_in": 300},
                            headers={"REB-APIKEY": admin.key}).json()["access_token"]
    before.runtime.store.dispose()

    during = _app(url, NEW, OLD)
    with during.test_client() as client:
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": used["secretKey"]}).status_code == 200
        assert client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        verified = client.post("/api/v1/keys/verify", json={"key": admin.key},
                               headers={"Authorization": f"Bearer {used['secretKey']}"}).json()
        assert verified["valid"] is True
        made = client.post("/api/v1/api-keys", json={"description": "new"},
                           headers={"REB-APIKEY": used["secretKey"]}).json()
    during.runtime.recorder.flush()  # the re-hash is written with the batch of last uses
    assert _stored_hash(during, used["id"]) == keys.hash_key(NEW, used["secretKey"])
    assert _stored_hash(during, made["id"]) == keys.hash_key(NEW, made["secretKey"])  # new keys: the new secret
    assert _stored_hash(during, idle["id"]) == keys.hash_key(OLD, idle["secretKey"])  # unused: not yet moved
    during.runtime.store.dispose()

    after = _app(url, NEW)  # the retired secret is gone
    with after.test_client() as client:
        for plaintext in (used["secretKey"], admin.key, made["secretKey"]):
            assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": plaintext}).status_code == 200
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": idle["secretKey"]}).status_code == 401
        assert client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    after.runtime.store.dispose()
