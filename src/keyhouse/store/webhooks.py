"""Webhooks: endpoints, and the deliveries made for them from the outbox (keyhouse.webhooks sends them).

The outbox is the audit trail itself: an event webhooks may be told of is written `webhook_pending`, in
the transaction of its change (store.trail), so no change can commit without its deliveries to come, and
none is made for a change that rolled back. `dispatch` turns pending events into deliveries, one per
subscribed endpoint, and clears them, in one transaction; `claim` hands a sender the deliveries that are
due, each the oldest pending one of its endpoint and key (in order per key), claimed for a while so that
no other sender takes it; `settle` records what the endpoint answered. Signing secrets are handed here
sealed (keyhouse.webhooks seals them); the store never sees one in the clear.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

import orjson
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from .models import ApiKey, AuditEvent, Webhook, WebhookDelivery
from .trail import Actor, record

DISPATCH_BATCH = 500  # events turned into deliveries per transaction
CLAIM_SECONDS = 30  # how long a claimed delivery is a sender's: after that, another may send it again


def create_webhook(session: Session, organization_id: str, url: str, events: list[str], description: str | None,
                   secret_sealed: str, *, actor: Actor, now: datetime, expiring_lead_seconds: int,
                   credits_low_threshold: int) -> Webhook:
    row = Webhook(organization_id=organization_id, url=url, events=events, description=description,
                  secret_sealed=secret_sealed, created_at=now, expiring_lead_seconds=expiring_lead_seconds,
                  credits_low_threshold=credits_low_threshold)
    session.add(row)
    session.flush()
    record(session, actor, "webhook.created", "webhook", row.id, detail=url[:255])
    return row


def webhooks_of(session: Session, organization_id: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.organization_id == organization_id)
                                .order_by(Webhook.created_at, Webhook.id)))


def get_webhook(session: Session, organization_id: str, webhook_id: str, *,
                for_update: bool = False) -> Webhook | None:
    query = select(Webhook).where(Webhook.organization_id == organization_id, Webhook.id == webhook_id)
    return session.scalars(query.with_for_update() if for_update else query).one_or_none()


def delete_webhook(session: Session, row: Webhook, *, actor: Actor) -> None:
    session.delete(row)
    record(session, actor, "webhook.deleted", "webhook", row.id, detail=row.url[:255])


def rotate_secret(session: Session, row: Webhook, sealed: str, overlap: timedelta, *, actor: Actor,
                  now: datetime) -> None:
    """A new signing secret; the one it replaces keeps signing beside it for `overlap`."""
    row.previous_secret_sealed, row.previous_until, row.secret_sealed = row.secret_sealed, now + overlap, sealed
    record(session, actor, "webhook.secret_rotated", "webhook", row.id)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _payload(event: AuditEvent) -> str:
    """What an endpoint is sent: Standard Webhooks' shape, `{type, timestamp, data}`."""
    about = {"key_id": event.target_id} if event.target_type == "api_key" else {"api": event.target_id}
    return orjson.dumps({"type": event.action, "timestamp": _iso(event.at),
                         "data": {"organization_id": event.organization_id, **about, "detail": event.detail}}).decode()


def dispatch(session: Session, now: datetime) -> int:
    """Makes the deliveries of up to DISPATCH_BATCH pending events, oldest first, and clears them; how many
    events it took. Several dispatchers skip each other's (PostgreSQL's SKIP LOCKED)."""
    events = list(session.scalars(select(AuditEvent).where(AuditEvent.webhook_pending.is_(True))
                                  .order_by(AuditEvent.id).limit(DISPATCH_BATCH).with_for_update(skip_locked=True)))
    if not events:
        return 0
    endpoints: dict[str, list[Webhook]] = {}
    for webhook in session.scalars(select(Webhook).where(
            Webhook.organization_id.in_({e.organization_id for e in events if e.organization_id}))):
        endpoints.setdefault(webhook.organization_id, []).append(webhook)
    session.add_all(WebhookDelivery(webhook_id=webhook.id, event_id=event.id, event_type=event.action,
                                    target_id=event.target_id, payload=_payload(event), status="pending",
                                    attempts=0, next_attempt_at=now, created_at=now)
                    for event in events for webhook in endpoints.get(event.organization_id or "", [])
                    if event.action in webhook.events)
    session.execute(update(AuditEvent).where(AuditEvent.id.in_([e.id for e in events])).values(webhook_pending=None))
    return len(events)


def _told_of(session: Session, webhook: Webhook, event_type: str, key_id: str, extra: dict, now: datetime) -> None:
    payload = orjson.dumps({"type": event_type, "timestamp": _iso(now), "data": {
        "organization_id": webhook.organization_id, "key_id": key_id, **extra}}).decode()
    session.add(WebhookDelivery(webhook_id=webhook.id, event_id=0, event_type=event_type, target_id=key_id,
                                payload=payload, status="pending", attempts=0, next_attempt_at=now, created_at=now))


def scheduled(session: Session, now: datetime, credits_left: Callable[[ApiKey, datetime], int | None]) -> int:
    """The deliveries no change makes, as their moment comes, for each endpoint that wants them: its
    organization's live keys that expire within its lead time (`key.expiring`, once a key), and those whose
    credits left (`credits_left`: keyhouse.credits' answer, a refill that is due counted) are at or below
    its threshold (`key.credits_low`, once until they are topped up or refilled). How many it made."""
    made = 0
    endpoints = session.scalars(select(Webhook).order_by(Webhook.id).with_for_update(skip_locked=True)).all()
    for webhook in endpoints:
        if "key.expiring" in webhook.events:
            told = select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook.id,
                                                    WebhookDelivery.event_type == "key.expiring",
                                                    WebhookDelivery.target_id == ApiKey.id)
            horizon = now + timedelta(seconds=webhook.expiring_lead_seconds)
            for key_id, expires_at in session.execute(
                    select(ApiKey.id, ApiKey.expires_at).where(
                        ApiKey.organization_id == webhook.organization_id, ApiKey.revoked_at.is_(None),
                        ApiKey.expires_at > now, ApiKey.expires_at <= horizon, ~exists(told))
                    .order_by(ApiKey.expires_at)).tuples():
                _told_of(session, webhook, "key.expiring", key_id, {"expires_at": _iso(expires_at)}, now)
                made += 1
        if "key.credits_low" in webhook.events:
            told = select(WebhookDelivery.id).where(
                WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.event_type == "key.credits_low",
                WebhookDelivery.target_id == ApiKey.id,
                WebhookDelivery.created_at >= func.coalesce(ApiKey.credits_refilled_at, ApiKey.created_at))
            for key in session.scalars(select(ApiKey).where(
                    ApiKey.organization_id == webhook.organization_id, ApiKey.revoked_at.is_(None),
                    ApiKey.credits_remaining <= webhook.credits_low_threshold, ~exists(told)).order_by(ApiKey.pk)):
                left = credits_left(key, now)
                if left is not None and left <= webhook.credits_low_threshold:
                    _told_of(session, webhook, "key.credits_low", key.id, {"credits_remaining": left}, now)
                    made += 1
    return made


class Due(NamedTuple):
    """A delivery a sender has claimed, with what it needs to send it."""

    id: int
    url: str
    payload: str
    created_at: datetime
    attempts: int
    secrets_sealed: tuple[str, ...]  # the endpoint's signing secrets: the current one, and one in its overlap


def claim(session: Session, now: datetime, limit: int) -> list[Due]:
    """Up to `limit` deliveries that are due, each the oldest pending one of its endpoint and key, claimed
    for CLAIM_SECONDS and counted as an attempt."""
    earlier = aliased(WebhookDelivery)
    query = (select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
             .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                    (WebhookDelivery.locked_until.is_(None)) | (WebhookDelivery.locked_until < now),
                    ~exists().where(and_(earlier.webhook_id == WebhookDelivery.webhook_id,
                                         earlier.target_id == WebhookDelivery.target_id,
                                         earlier.status == "pending", earlier.id < WebhookDelivery.id)))
             .order_by(WebhookDelivery.id).limit(limit).with_for_update(of=WebhookDelivery, skip_locked=True))
    due = []
    for delivery, webhook in session.execute(query).tuples():
        delivery.locked_until = now + timedelta(seconds=CLAIM_SECONDS)
        delivery.attempts += 1
        overlapping = webhook.previous_secret_sealed if webhook.previous_until and webhook.previous_until > now \
            else None
        due.append(Due(delivery.id, webhook.url, delivery.payload, delivery.created_at, delivery.attempts,
                       (webhook.secret_sealed, *([overlapping] if overlapping else []))))
    return due


def settle(session: Session, delivery_id: int, now: datetime, status_code: int | None, error: str | None,
           retry_at: Callable[[int, datetime], datetime | None]) -> None:
    """What the endpoint answered: delivered on a 2xx; otherwise tried again at `retry_at(attempts,
    created_at)`, or failed when that is None (its day of tries is over)."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != "pending":
        return
    delivery.locked_until, delivery.last_status_code, delivery.last_error = None, status_code, error
    if status_code is not None and 200 <= status_code < 300:
        delivery.status, delivery.delivered_at = "delivered", now
    elif (again := retry_at(delivery.attempts, delivery.created_at)) is None:
        delivery.status = "failed"
    else:
        delivery.next_attempt_at = again


def page_deliveries(session: Session, webhook_id: str, limit: int,
                    offset: int) -> tuple[int, list[WebhookDelivery]]:
    """(how many, a page of them, newest first)."""
    total = session.scalar(select(func.count()).select_from(WebhookDelivery)
                           .where(WebhookDelivery.webhook_id == webhook_id)) or 0
    rows = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                .order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset))) if limit else []
    return total, rows


def replay(session: Session, webhook_id: str, delivery_id: int, now: datetime, *,
           actor: Actor) -> WebhookDelivery | None:
    """The delivery sent again, as a new one (its own id and tries) with the same event; None if unknown."""
    old = session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id,
                                                        WebhookDelivery.id == delivery_id)).one_or_none()
    if old is None:
        return None
    new = WebhookDelivery(webhook_id=webhook_id, event_id=old.event_id, event_type=old.event_type,
                          target_id=old.target_id, payload=old.payload, status="pending", attempts=0,
                          next_attempt_at=now, created_at=now)
    session.add(new)
    session.flush()
    record(session, actor, "webhook.replayed", "webhook", webhook_id, detail=f"delivery {delivery_id}")
    return new
