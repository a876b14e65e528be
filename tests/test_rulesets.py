"""Traffic-filter rulesets: update, associations, and deletion that respects them."""

from tests.helpers import API, RULESET, errors_of

RULESETS = f"{API}/deployments/traffic-filter/rulesets"


def make(client, actor, **overrides):
    r = client.post(RULESETS, json={**RULESET, **overrides}, headers=actor.cloud)
    assert r.status_code == 200
    return r.json()["id"]


def associate(client, actor, ruleset_id, entity="dep-1"):
    return client.post(f"{RULESETS}/{ruleset_id}/associations", json={"entity_type": "deployment", "id": entity},
                       headers=actor.cloud)


def test_update_replaces_the_definition_and_keeps_associations(client, world):
    rid = make(client, world.acme_admin)
    associate(client, world.acme_admin, rid)
    body = {"name": "vpn", "type": "vpce", "region": "eu-west-1", "include_by_default": True,
            "rules": [{"source": "vpce-0abc"}]}
    r = client.put(f"{RULESETS}/{rid}", json=body, headers=world.acme_admin.cloud)
    assert r.status_code == 200 and r.json() == {"id": rid}
    info = client.get(f"{RULESETS}/{rid}?include_associations=true", headers=world.acme_admin.cloud).json()
    assert (info["name"], info["type"], info["region"], info["include_by_default"]) == ("vpn", "vpce", "eu-west-1",
                                                                                        True)
    assert [rule["source"] for rule in info["rules"]] == ["vpce-0abc"] and "description" not in info
    assert info["associations"] == [{"entity_type": "deployment", "id": "dep-1"}] and info["total_associations"] == 1


def test_update_validates_like_create_and_changes_nothing(client, world):
    rid = make(client, world.acme_admin)
    r = client.put(f"{RULESETS}/{rid}", json={**RULESET, "rules": [{"source": "300.1.1.1"}]},
                   headers=world.acme_admin.cloud)
    assert errors_of(r, "traffic_filter.invalid_input")["fields"] == ["rules.0.source"]
    assert client.get(f"{RULESETS}/{rid}", headers=world.acme_admin.cloud).json()["name"] == RULESET["name"]
    errors_of(client.put(f"{RULESETS}/{rid}", json=RULESET, headers=world.globex_admin.cloud),
              "traffic_filter.not_found")


def test_associations_are_idempotent(client, world):
    rid = make(client, world.acme_admin)
    first, again = associate(client, world.acme_admin, rid), associate(client, world.acme_admin, rid)
    assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json() == {}
    associate(client, world.acme_admin, rid, "dep-2")
    listed = client.get(f"{RULESETS}/{rid}/associations", headers=world.acme_admin.cloud).json()
    assert listed == {"associations": [{"entity_type": "deployment", "id": "dep-1"},
                                       {"entity_type": "deployment", "id": "dep-2"}], "total_associations": 2}


def test_rulesets_of_an_entity(client, world):
    a, b = make(client, world.acme_admin, name="a"), make(client, world.acme_admin, name="b")
    associate(client, world.acme_admin, a, "dep-9")
    associate(client, world.acme_admin, b, "dep-9")
    r = client.get(f"{API}/deployments/traffic-filter/associations/deployment/dep-9/rulesets",
                   headers=world.acme_admin.cloud)
    assert [x["name"] for x in r.json()["rulesets"]] == ["a", "b"]
    other = client.get(f"{API}/deployments/traffic-filter/associations/deployment/dep-9/rulesets",
                       headers=world.globex_admin.cloud)
    assert other.json() == {"rulesets": []}


def test_delete_association(client, world):
    rid = make(client, world.acme_admin)
    associate(client, world.acme_admin, rid)
    path = f"{RULESETS}/{rid}/associations/deployment/dep-1"
    assert client.delete(path, headers=world.acme_admin.cloud).json() == {}
    errors_of(client.delete(path, headers=world.acme_admin.cloud), "traffic_filter.association_not_found")
    errors_of(client.delete(f"{RULESETS}/nope/associations/deployment/dep-1", headers=world.acme_admin.cloud),
              "traffic_filter.not_found")


def test_delete_with_associations_is_refused_unless_ignored(client, world):
    rid = make(client, world.acme_admin)
    associate(client, world.acme_admin, rid)
    r = client.delete(f"{RULESETS}/{rid}", headers=world.acme_admin.cloud)
    assert r.status_code == 409
    errors_of(r, "traffic_filter.ruleset_has_associations")
    assert client.get(f"{RULESETS}/{rid}/associations",
                      headers=world.acme_admin.cloud).json()["total_associations"] == 1
    assert client.delete(f"{RULESETS}/{rid}?ignore_associations=true",
                         headers=world.acme_admin.cloud).status_code == 200
    errors_of(client.get(f"{RULESETS}/{rid}", headers=world.acme_admin.cloud), "traffic_filter.not_found")
    gone = client.get(f"{API}/deployments/traffic-filter/associations/deployment/dep-1/rulesets",
                      headers=world.acme_admin.cloud)
    assert gone.json() == {"rulesets": []}


def test_list_filters_by_region_and_can_include_associations(client, world):
    east = make(client, world.acme_admin, region="us-east-1")
    make(client, world.acme_admin, region="eu-west-1")
    associate(client, world.acme_admin, east)
    r = client.get(f"{RULESETS}?region=us-east-1&include_associations=true", headers=world.acme_admin.cloud).json()
    assert [x["id"] for x in r["rulesets"]] == [east]
    assert r["rulesets"][0]["associations"] == [{"entity_type": "deployment", "id": "dep-1"}]
    plain = client.get(RULESETS, headers=world.acme_admin.cloud).json()["rulesets"]
    assert len(plain) == 2 and all("associations" not in x for x in plain)


def test_association_input_is_validated(client, world):
    rid = make(client, world.acme_admin)
    for body, field in (({"entity_type": "cluster", "id": "x"}, "entity_type"), ({"entity_type": "deployment"}, "id")):
        r = client.post(f"{RULESETS}/{rid}/associations", json=body, headers=world.acme_admin.cloud)
        assert errors_of(r, "traffic_filter.invalid_input")["fields"] == [field]
    r = client.get(f"{API}/deployments/traffic-filter/associations/cluster/x/rulesets", headers=world.acme_admin.cloud)
    assert r.status_code == 400


def test_an_organization_holds_at_most_1024_rulesets(app, client, world):
    from keyhouse.api.traffic_filters import MAX_RULESETS
    from keyhouse.store import rulesets

    org = world.acme_admin.organization_id
    with app.runtime.store.session() as s:
        for i in range(MAX_RULESETS - 1):
            rulesets.insert_ruleset(s, org, actor=None, name=f"r{i}", type="ip", region="us-east-1",
                                   include_by_default=False,
                                   rules=[{"source": "192.0.2.1"}])
    body = {"name": "last", "type": "ip", "region": "us-east-1", "rules": [{"source": "192.0.2.1"}]}
    url = "/api/v1/deployments/traffic-filter/rulesets"
    assert client.post(url, json=body, headers=world.acme_admin.cloud).status_code == 200
    over = client.post(url, json=body, headers=world.acme_admin.cloud)
    assert over.status_code == 400
    assert (over.json()["errors"][0]["code"] == over.headers["x-cloud-error-codes"]
            == "traffic_filter.rulesets_limit_exceeded")
    assert client.post(url, json=body, headers=world.globex_admin.cloud).status_code == 200  # per organization


def test_a_ruleset_holds_at_most_512_rules(client, world):
    rules = [{"source": f"10.0.{i // 256}.{i % 256}"} for i in range(513)]
    url = "/api/v1/deployments/traffic-filter/rulesets"
    body = {"name": "big", "type": "ip", "region": "us-east-1", "rules": rules}
    assert client.post(url, json=body, headers=world.acme_admin.cloud).status_code == 400
    assert client.post(url, json={**body, "rules": rules[:512]}, headers=world.acme_admin.cloud).status_code == 200
