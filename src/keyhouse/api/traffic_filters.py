"""The cloud family's traffic-filter rulesets: `/deployments/traffic-filter/rulesets...` and their
associations with deployments.

Errors carry the family's `traffic_filter.*` codes; see keyhouse.errors for the envelope.
"""

from __future__ import annotations

from .. import spec
from ..auth import Principal, principal
from ..errors import ApiError
from ..runtime import Runtime
from ..store import rulesets
from ..store.models import Ruleset, new_id

# Rulesets per organization: as many as a list of them may hold (the rules of one are bounded by the
# spec too: 512).
MAX_RULESETS = spec.schema(spec.document(), "TrafficFilterRulesets")["properties"]["rulesets"]["maxItems"]



def _ruleset(row: Ruleset, associations: list | None, with_associations: bool) -> dict:
    associations = associations or []
    view = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "region": row.region,
        "include_by_default": row.include_by_default,
        "rules": row.rules,
        "total_associations": len(associations),
    }
    if row.description is not None:
        view["description"] = row.description
    if with_associations:
        view["associations"] = [{"entity_type": a.entity_type, "id": a.entity_id} for a in associations]
    return view


def _definition(body: dict) -> dict:
    """The stored fields of a ruleset body; every rule gets an id of ours (the spec checked sources)."""
    return {
        "name": body["name"],
        "description": body.get("description"),
        "type": body["type"],
        "region": body["region"],
        "include_by_default": body["include_by_default"],
        "rules": [{"id": new_id(), **rule} for rule in body["rules"]],
    }


def _find_ruleset(s, me: Principal, ruleset_id: str) -> Ruleset:
    row = rulesets.get_ruleset(s, me.organization_id, ruleset_id)
    if row is None:
        raise ApiError("not_found", "The traffic filter ruleset can't be found.", code="traffic_filter.not_found")
    return row


def create_traffic_filter_ruleset(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        if rulesets.count_rulesets(s, me.organization_id) >= MAX_RULESETS:
            raise ApiError("invalid_body", f"An organization holds at most {MAX_RULESETS} rulesets; delete one first.",
                           code="traffic_filter.rulesets_limit_exceeded")
        row = rulesets.insert_ruleset(s, me.organization_id, actor=me.actor(), **_definition(body))
        return {"id": row.id}, 200


def get_traffic_filter_rulesets(token_info: dict, region: str | None = None, include_associations: bool = False,
                                *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        rows = rulesets.rulesets_of(s, me.organization_id, region)
        associations = rulesets.associations_of(s, [r.id for r in rows])
        return {"rulesets": [_ruleset(r, associations[r.id], include_associations) for r in rows]}


def get_traffic_filter_ruleset(ruleset_id: str, token_info: dict, include_associations: bool = False, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        row = _find_ruleset(s, me, ruleset_id)
        return _ruleset(row, rulesets.associations_of(s, [row.id])[row.id], include_associations)


def update_traffic_filter_ruleset(ruleset_id: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        rulesets.update_ruleset(s, row, actor=me.actor(), **_definition(body))
        return {"id": row.id}, 200


def delete_traffic_filter_ruleset(ruleset_id: str, token_info: dict, ignore_associations: bool = False, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        count = len(rulesets.associations_of(s, [row.id])[row.id])
        if count and not ignore_associations:
            raise ApiError("conflict", f"The ruleset has {count} association(s); delete them first or pass "
                           "ignore_associations=true.", code="traffic_filter.ruleset_has_associations")
        rulesets.delete_ruleset(s, row, actor=me.actor())
    return {}, 200


def get_traffic_filter_ruleset_deployment_associations(ruleset_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        row = _find_ruleset(s, me, ruleset_id)
        associations = rulesets.associations_of(s, [row.id])[row.id]
        return {"associations": [{"entity_type": a.entity_type, "id": a.entity_id} for a in associations],
                "total_associations": len(associations)}


def create_traffic_filter_ruleset_association(ruleset_id: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        made = rulesets.add_association(s, row, body["entity_type"], body["id"], actor=me.actor())
    return {}, 201 if made else 200


def delete_traffic_filter_ruleset_association(ruleset_id: str, association_type: str, associated_entity_id: str,
                                              token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        if not rulesets.remove_association(s, row, association_type, associated_entity_id, actor=me.actor()):
            raise ApiError("not_found", "The association can't be found.", code="traffic_filter.association_not_found")
    return {}, 200


def get_traffic_filter_deployment_ruleset_associations(association_type: str, associated_entity_id: str,
                                                       token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        rows = rulesets.rulesets_of_entity(s, me.organization_id, association_type, associated_entity_id)
        associations = rulesets.associations_of(s, [r.id for r in rows])
        return {"rulesets": [_ruleset(r, associations[r.id], False) for r in rows]}
