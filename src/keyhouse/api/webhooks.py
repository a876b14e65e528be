"""Webhooks: `/webhooks`, the organization's endpoints, and their deliveries (keyhouse.webhooks sends them).

An endpoint's signing secret is shown in the answer that makes (or rotates) it, and kept sealed; an
address inside this network is refused (422) unless the deployment allows it.
"""

from __future__ import annotations

import orjson

from .. import spec
from ..auth import principal
from ..errors import ApiError, FieldError
from ..runtime import Runtime
from ..store import organizations
from ..store import webhooks as store
from ..store.models import Webhook, WebhookDelivery, utcnow
from ..webhooks import SECRET_OVERLAP, new_secret, refused_address
from .common import iso_z, paging_headers

# An organization's endpoints at most: what listWebhooks may answer.
MAX_ENDPOINTS = next(op for _, _, op in spec.operations(spec.document()) if op["operationId"] == "listWebhooks")[
    "responses"]["200"]["content"]["application/json"]["schema"]["maxItems"]


def _endpoint(row: Webhook) -> dict:
    return {"id": row.id, "url": row.url, "events": list(row.events), "description": row.description,
            "expiring_lead_seconds": row.expiring_lead_seconds, "credits_low_threshold": row.credits_low_threshold,
            "created_at": iso_z(row.created_at)}


def _delivery(row: WebhookDelivery) -> dict:
    return {"id": row.id, "event": orjson.loads(row.payload), "status": row.status, "attempts": row.attempts,
            "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": iso_z(row.next_attempt_at), "created_at": iso_z(row.created_at),
            "delivered_at": iso_z(row.delivered_at) if row.delivered_at else None}


def _found(s, me, webhook_id: str, *, for_update: bool = False) -> Webhook:  # type: ignore[no-untyped-def]
    row = store.get_webhook(s, me.organization_id, webhook_id, for_update=for_update)
    if row is None:
        raise ApiError("not_found", "No webhook endpoint of the organization has this ID.")
    return row


def list_webhooks(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return [_endpoint(row) for row in store.webhooks_of(s, me.organization_id)]


def create_webhook(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    if (why := refused_address(body["url"], rt.settings.webhook_allow_private_addresses)) is not None:
        raise ApiError("invalid_body", f"url: {why}; an endpoint is a URL reachable on the internet.",
                       fields=[FieldError(("url",), why, "format")])
    secret = new_secret()
    with rt.store.session() as s:
        if organizations.count_under_lock(s, me.organization_id, Webhook) >= MAX_ENDPOINTS:
            raise ApiError("conflict", f"The organization has {MAX_ENDPOINTS} endpoints, the most it may have.")
        row = store.create_webhook(s, me.organization_id, body["url"], list(body["events"]), body.get("description"),
                                   rt.webhooks.sealer.seal(secret), actor=me.actor(), now=utcnow(),
                                   expiring_lead_seconds=body["expiring_lead_seconds"],  # the spec's defaults,
                                   credits_low_threshold=body["credits_low_threshold"])  # filled in if absent
        return {**_endpoint(row), "secret": secret}, 201


def delete_webhook(webhook_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        store.delete_webhook(s, _found(s, me, webhook_id, for_update=True), actor=me.actor())
    return None, 204


def rotate_webhook_secret(webhook_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    secret = new_secret()
    with rt.store.session() as s:
        row = _found(s, me, webhook_id, for_update=True)
        store.rotate_secret(s, row, rt.webhooks.sealer.seal(secret), SECRET_OVERLAP, actor=me.actor(), now=utcnow())
        return {**_endpoint(row), "secret": secret}


def list_webhook_deliveries(webhook_id: str, token_info: dict, limit: int, offset: int, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        _found(s, me, webhook_id)
        total, rows = store.page_deliveries(s, webhook_id, limit, offset)
        return [_delivery(row) for row in rows], 200, paging_headers(total, limit, offset)


def replay_webhook_delivery(webhook_id: str, delivery_id: int, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        _found(s, me, webhook_id)
        new = store.replay(s, webhook_id, delivery_id, utcnow(), actor=me.actor())
        if new is None:
            raise ApiError("not_found", "The endpoint has no delivery with this ID.")
        return _delivery(new), 202
