"""Authentication fails closed: every credential an operation accepts that a request presents must hold."""

from keyhouse import keys
from tests.helpers import API


def test_good_bearer_does_not_excuse_a_bad_billing_key(client, world):
    r = client.get(f"{API}/api-keys", headers={**world.acme_admin.bearer, "REB-APIKEY": keys.generate()})
    assert r.status_code == 401


def test_good_billing_key_does_not_excuse_a_bad_bearer(client, world):
    r = client.get(f"{API}/api-keys", headers={**world.acme_admin.billing, "Authorization": "Bearer kh_nonsense"})
    assert r.status_code == 401


def test_revoked_key_next_to_a_good_one_is_refused(client, world):
    created = client.post(f"{API}/user/api-keys", json={"name": "x"}, headers=world.acme_admin.bearer).json()
    client.delete(f"{API}/user/api-keys/{created['id']}", headers=world.acme_admin.bearer)
    r = client.get(f"{API}/api-keys", headers={**world.acme_admin.bearer, "REB-APIKEY": created["key"]})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_two_good_credentials_of_the_same_request_are_fine(client, world):
    r = client.get(f"{API}/api-keys", headers={**world.acme_admin.bearer, **world.acme_admin.billing})
    assert r.status_code == 200


def test_headers_that_are_not_the_operations_credentials_are_ignored(client, world):
    # REB-APIKEY is not a workspace credential: it is just another header there.
    r = client.get(f"{API}/user/api-keys", headers={**world.acme_admin.bearer, "REB-APIKEY": "junk"})
    assert r.status_code == 200


def test_the_principal_comes_from_the_key_not_from_the_request(client, world):
    r = client.get(f"{API}/user/api-keys", headers={**world.acme_member.bearer, "X-User-Id": world.acme_admin.user_id})
    assert [k["id"] for k in r.json()] == [world.acme_member.key_id]
