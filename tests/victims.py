"""The victims the OWASP tests (and the edge tests) aim every operation of the spec at: an organization
with an admin, a member, a second key, a ruleset with an association and a declared API, and how to
build, for any operation, a request aimed at them."""

from __future__ import annotations

import re

from sqlalchemy import select

from keyhouse import keys, spec
from keyhouse.store import webhooks as webhook_store
from keyhouse.store.models import ApiKey, Association, PlatformApi, Ruleset, WebhookDelivery, utcnow
from keyhouse.validation import compiled
from tests.conftest import SECRET

SPEC = spec.document()


def signed(op: dict) -> bool:
    """An operation whose credential is a signature of its body (a leak report's), not a key."""
    schemes = SPEC["components"]["securitySchemes"]
    return any(schemes[name].get("x-keyhouse-signed-body") for req in op.get("security", []) for name in req)


# The operations a key calls (those a signature authenticates have tests of their own: SIGNED).
OPERATIONS = [(method, path, op) for path, item in SPEC["paths"].items() for method, op in item.items()
              if method in {"get", "post", "put", "delete"} and op.get("security") != [] and not signed(op)]
IDS = [op["operationId"] for _, _, op in OPERATIONS]
SIGNED = [(method, path, op) for path, item in SPEC["paths"].items() for method, op in item.items()
          if method in {"get", "post", "put", "delete"} and signed(op)]


def resolved(node):
    """A schema with every local `$ref` replaced by what it names (the spec has no cycles)."""
    if isinstance(node, list):
        return [resolved(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolved(target)
    return {k: resolved(v) for k, v in node.items()}


class Victim:
    """Organization acme: its admin, a member, a second key of the admin's, a ruleset with an association, and
    an API it declared."""

    def __init__(self, app, client, world):
        self.admin, self.member = world.acme_admin, world.acme_member
        hooked = client.post("/api/v1/webhooks", headers=self.admin.bearer,
                             json={"url": "https://victim.example/hook", "events": ["key.created", "key.revoked"]})
        assert hooked.status_code == 201, hooked.text
        self.webhook_id = hooked.json()["id"]
        made = client.post("/api/v1/api-keys", json={"description": "the target"}, headers=self.admin.billing)
        assert made.status_code == 201, made.text
        self.key_id, self.key = made.json()["id"], made.json()["secretKey"]
        with app.runtime.store.session() as s:  # the outbox made into deliveries, as the sender would
            webhook_store.dispatch(s, utcnow())
            self.delivery_id = s.scalar(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == self.webhook_id))
        ruleset = client.post("/api/v1/deployments/traffic-filter/rulesets", headers=self.admin.cloud, json={
            "name": "office", "type": "ip", "region": "us-east-1", "rules": [{"source": "192.0.2.0/24"}]})
        assert ruleset.status_code in (200, 201), ruleset.text
        self.ruleset_id = ruleset.json()["id"]
        associated = client.post(f"/api/v1/deployments/traffic-filter/rulesets/{self.ruleset_id}/associations",
                                 headers=self.admin.cloud, json={"entity_type": "deployment", "id": "dep-acme-1"})
        assert associated.status_code in (200, 201), associated.text
        declared = client.post("/api/v1/apis", headers=self.admin.bearer,
                               json={"name": "victim-docs", "scopes": ["docs:read", "docs:write"]})
        assert declared.status_code == 201, declared.text
        self.app = app

    def path_values(self) -> dict:
        """A value for every path parameter of the spec, each naming a victim's object."""
        return {"api_key_id": self.key_id, "id": self.key_id, "key_id": self.key_id, "user_id": self.admin.user_id,
                "ruleset_id": self.ruleset_id, "association_type": "deployment",
                "associated_entity_id": "dep-acme-1", "api_name": "victim-docs", "webhook_id": self.webhook_id,
                "delivery_id": str(self.delivery_id)}

    def bodies(self) -> dict:
        """A valid body for every request schema of the spec, aimed at the victim's objects."""
        return {
            "CreateApiKeyRequest": {"description": "intruder"},
            "DeleteApiKeysRequest": {"keys": [self.key_id]},
            "DeleteUsersApiKeysRequest": {"user_api_keys": [{"user_id": self.admin.user_id,
                                                             "api_key_ids": [self.key_id]}]},
            "TrafficFilterRulesetRequest": {"name": "intruder", "type": "ip", "region": "us-east-1",
                                            "rules": [{"source": "0.0.0.0/0"}]},
            "FilterAssociation": {"entity_type": "deployment", "id": "dep-intruder"},
            "BillingApiKeyInput": {"description": "intruder"},
            "WorkspaceApiKeyInput": {"name": "intruder"},
            "VerifyKeyRequest": {"key": self.key},
            "LookupKeyRequest": {"key": self.key},
            "RerollKeyRequest": {"grace_period_seconds": 0},
            "CreateTokenRequest": {"expires_in": 60},
            "PlatformApiInput": {"name": "intruder", "scopes": ["intrude"]},
            "KeyInput": {"name": "intruder", "owner_id": "intruder"},
            "LeakPolicy": {"on_leak": "notify"},
            "WebhookInput": {"url": "https://intruder.example/hook", "events": ["key.revoked"]},
            "KeyUpdate": {"name": "intruder", "owner_id": "intruder"},
            "PlatformApiDefinition": {"scopes": ["intrude"]},
        }

    def secrets(self) -> set[str]:
        """What no one outside may learn: identifiers and keys of the victim's organization."""
        return {self.admin.organization_id, self.admin.user_id, self.member.user_id, self.admin.key_id,
                self.member.key_id, self.key_id, self.admin.key, self.member.key, self.key, self.ruleset_id,
                keys.hash_key(SECRET, self.key)}

    def snapshot(self, owner: str | None = None) -> list:
        """The victim's stored state (its keys, or only one owner's; its rulesets and associations)."""
        with self.app.runtime.store.session() as s:
            query = select(ApiKey).where(ApiKey.organization_id == self.admin.organization_id)
            if owner:
                query = query.where(ApiKey.user_id == owner)
            state = [(k.id, k.key_hash, k.secret_version, k.revoked_at, k.description, k.permissions, k.acl,
                      k.allowed_ips, k.expires_at, k.type, k.updated_at, k.owner_id, k.meta)
                     for k in s.scalars(query.order_by(ApiKey.pk))]
            if owner is None:
                state += [(r.id, r.name, r.rules, r.region, r.include_by_default) for r in s.scalars(
                    select(Ruleset).where(Ruleset.organization_id == self.admin.organization_id))]
                state += [(a.ruleset_id, a.entity_type, a.entity_id) for a in s.scalars(
                    select(Association).where(Association.ruleset_id == self.ruleset_id))]
                state += [(p.name, p.source, p.permissions, p.groups, p.document) for p in s.scalars(
                    select(PlatformApi).where(PlatformApi.organization_id == self.admin.organization_id))]
            return state


_SCHEMAS: dict = {}  # resolved once: the compiled validators are cached by schema object


def request_for(method: str, path: str, op: dict, victim: Victim) -> dict:
    values = victim.path_values()
    names = re.findall(r"{([^}]+)}", path)
    missing = [n for n in names if n not in values]
    assert not missing, f"{op['operationId']}: no value for path parameter(s) {missing}; add them to Victim"
    url = "/api/v1" + re.sub(r"{([^}]+)}", lambda m: values[m.group(1)], path)
    request = {"method": method.upper(), "url": url}
    if "requestBody" in op:
        schema_ref = op["requestBody"]["content"]["application/json"]["schema"]
        name = schema_ref["$ref"].rsplit("/", 1)[-1]
        bodies = victim.bodies()
        assert name in bodies, f"{op['operationId']}: no body for {name}; add one to Victim.bodies"
        # a body the schema accepts: authorization is tested
        compiled(_SCHEMAS.setdefault(name, resolved(schema_ref)))(dict(bodies[name]))
        request["json"] = bodies[name]
    return request
