"""The tables. One key store serves the three families; each family's handler module maps its own
field names onto these columns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    return str(uuid.uuid4())


# The database's clock, as this process reads it. Every moment keyhouse decides by (a key's expiry, a credit
# refill, when a key was revoked, a session's end) is this host's clock corrected by how far it is from the
# database's, which every host shares (Store.keep_time measures it): hosts whose clocks drift apart still
# agree on whether a key has expired. Zero until measured, and on SQLite, whose clock is this host's. A
# process-wide correction, like the clock it corrects.
_clock_offset = timedelta(0)


def _system_now() -> datetime:
    return datetime.now(UTC)


def utcnow() -> datetime:
    return _system_now() + _clock_offset


def set_clock_offset(offset: timedelta) -> None:
    """How far the database's clock is ahead of this host's (Store.keep_time)."""
    global _clock_offset
    _clock_offset = offset


def fold(value: str | None) -> str | None:
    """How keyhouse compares text ignoring case: Unicode full case folding, in Python. Neither database
    can be trusted to do it alike: SQLite's lower() folds ASCII only, PostgreSQL's follows the database's
    locale. So the folded form is stored beside the text (ApiKey.FOLDED) and compared there."""
    return None if value is None else value.casefold()


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        # SQLite: no zone; PostgreSQL: the session's (psycopg's ZoneInfo("Etc/UTC"), say). Handed out in
        # datetime.UTC itself, which whoever formats them can tell at once (keyhouse.api.common._utc).
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # What a leak report (`POST /leaks/github`) does to a key of the organization found in public:
    # revoke it at once, or only notify (the trail, the change feed).
    leak_policy: Mapped[str] = mapped_column(String(16), default="revoke", server_default="revoke")


class LiveKeyCount(Base):
    """How many live keys an organization holds: the sum of its rows here. Kept in step with every create,
    reissue and revoke, in the same transaction, since the unfiltered `Pagination-Total` of an organization
    with a million keys must not be a million-row count. Several rows, each unit of work adding to one of
    them at random, so that an organization's creates and revokes do not queue behind one row's lock."""

    __tablename__ = "live_key_counts"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                                 primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    live: Mapped[int] = mapped_column(Integer)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | member
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        # Billing ids are chosen by clients, so they are unique per organization, not globally.
        UniqueConstraint("organization_id", "id", name="uq_api_keys_org_id"),
        Index("ix_api_keys_org_user_created", "organization_id", "user_id", "created_at"),
        Index("ix_api_keys_org_created", "organization_id", "created_at"),
        # One index per sort the billing list offers, over live keys only, ending in the tie-breaker:
        # the first page of any single-field sort is an index range scan, however many keys there are.
        *(Index(f"ix_api_keys_live_{column}", "organization_id", column, "pk",
                postgresql_where=text("revoked_at IS NULL"), sqlite_where=text("revoked_at IS NULL"))
          for column in ("created_at", "updated_at", "description", "type", "api_user")),
        # Keys by whom they are for (keyhouse's own list filters on it).
        Index("ix_api_keys_org_owner", "organization_id", "owner_id"),
        # The filters compare the folded forms (see `fold`), each through an index of its own.
        *(Index(f"ix_api_keys_folded_{column}", "organization_id", f"{column}_folded")
          for column in ("id", "description", "api_user")),
    )
    # column -> the column holding its folded form, kept in step on every insert and update (below).
    FOLDED = {"id": "id_folded", "description": "description_folded", "api_user": "api_user_folded"}

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(50), default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16), default="secret")
    acl: Mapped[list | None] = mapped_column(JSON, nullable=True)
    allowed_ips: Mapped[list | None] = mapped_column(JSON, nullable=True)
    api_user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The authoritative permissions: operationIds or "*". `acl` is kept as the billing client sent it.
    permissions: Mapped[list] = mapped_column(JSON, default=list)
    allow_self_revoke: Mapped[bool] = mapped_column(Boolean, default=False)
    workspace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # HMAC-SHA256 of the key under the server secret: the only trace of the key that is kept.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The masked key (keys.mask): a prefix of up to 20 characters, 4, an ellipsis and 4 (migration 0013).
    # SQLite enforces no VARCHAR's length, and its column keeps the one it was made with.
    key_hint: Mapped[str] = mapped_column(String(32).with_variant(String(16), "sqlite"))
    # Counts the key's secrets: a reroll or a reissue gives it a new one. Tokens carry the version of the
    # secret they were made from, and die with it (see RetiredSecret).
    secret_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Who the key is for in the organization's platform (a customer's id), and free-form data for its
    # gateway: both returned by verify. Set through keyhouse's own key operations.
    owner_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    meta: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Credits: verifications left (null: unlimited), spent by verify in one conditional UPDATE, and how
    # they are topped up (both null: never). A refill sets them back to the amount once the interval has
    # passed since `credits_refilled_at`.
    credits_remaining: Mapped[int | None] = mapped_column(Integer, nullable=True)
    credits_refill_amount: Mapped[int | None] = mapped_column(Integer, nullable=True)
    credits_refill_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    credits_refilled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The key's own verify rate limit (both null: the server's default per key).
    verify_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    verify_window_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    id_folded: Mapped[str] = mapped_column(Text)
    description_folded: Mapped[str] = mapped_column(Text)
    api_user_folded: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


@event.listens_for(ApiKey, "before_insert")
@event.listens_for(ApiKey, "before_update")
def _keep_folded(_mapper, _connection, key: ApiKey) -> None:
    if key.id is None:
        key.id = new_id()  # the default, drawn here so that its folded form is known too
    for column, folded in ApiKey.FOLDED.items():
        setattr(key, folded, fold(getattr(key, column)))


class KeyUsage(Base):
    """Verdicts on a key (VALID and each refusal's code), counted per minute, per hour and per day: each
    verdict adds one to the three rows of its moment. Written in batches by the recorder, off the request
    path; pruned per granularity (keyhouse.store.usage.KEPT)."""

    __tablename__ = "key_usage"
    # Pruning deletes the oldest rows. On `start` alone: an index led by granularity, equal in every read,
    # drew SQLite's planner (without statistics) away from the primary key, scanning every key's day
    # (100 keys x 30 days at a million keys: 800 ms instead of a few). A count's update touches no index.
    __table_args__ = (Index("ix_key_usage_start", "start"),)

    key_pk: Mapped[int] = mapped_column(ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True)
    granularity: Mapped[str] = mapped_column(String(8), primary_key=True)  # minute | hour | day
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class OrganizationUsage(Base):
    """The same counts summed over an organization's keys, kept beside them so that its overview reads a
    row per moment and outcome however many keys it has."""

    __tablename__ = "organization_usage"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                                 primary_key=True)
    granularity: Mapped[str] = mapped_column(String(8), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class KeyAddress(Base):
    """A client address a key was presented from, with how many verdicts it drew and when it was last seen."""

    __tablename__ = "key_addresses"
    __table_args__ = (Index("ix_key_addresses_last_seen", "last_seen_at"),)

    key_pk: Mapped[int] = mapped_column(ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True)
    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RetiredSecret(Base):
    """A secret a reroll or a reissue took from its key. It keeps authenticating until `valid_until` (a
    reroll's grace window; the moment of retirement otherwise), and after that a presented retired secret
    is REVOKED, not a key that never existed. A token made from it dies with it (its `version`)."""

    __tablename__ = "retired_secrets"
    __table_args__ = (Index("ix_retired_secrets_key_version", "key_pk", "version"),)

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_pk: Mapped[int] = mapped_column(ForeignKey("api_keys.pk", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # the key's secret_version while this was its secret
    retired_at: Mapped[datetime] = mapped_column(UtcDateTime)
    valid_until: Mapped[datetime] = mapped_column(UtcDateTime)


class Ruleset(Base):
    __tablename__ = "rulesets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(64))
    include_by_default: Mapped[bool] = mapped_column(Boolean, default=False)
    rules: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Association(Base):
    __tablename__ = "ruleset_associations"
    __table_args__ = (
        UniqueConstraint("ruleset_id", "entity_type", "entity_id", name="uq_association"),
        Index("ix_association_entity", "organization_id", "entity_type", "entity_id"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ruleset_id: Mapped[str] = mapped_column(ForeignKey("rulesets.id", ondelete="CASCADE"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PlatformApi(Base):
    """An API an organization guards with keyhouse, and the permissions it declares (keyhouse.platforms)."""

    __tablename__ = "platform_apis"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_platform_apis_org_name"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(16))  # openapi | scopes
    document: Mapped[str | None] = mapped_column(Text, nullable=True)  # as the organization sent it
    permissions: Mapped[list] = mapped_column(JSON)
    groups: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ConsoleSession(Base):
    """A person signed in to the console (keyhouse.console) with a key. The browser holds the session's
    token and nothing else; only the token's SHA-256 is kept here, so this table alone signs no one in.
    Like a token, a session acts as its key did at sign-in (its secret's `secret_version`), bounded by
    what the key may do now: it ends at `expires_at`, at sign-out, or when its key stops being valid."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_pk: Mapped[int] = mapped_column(ForeignKey("api_keys.pk", ondelete="CASCADE"), index=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(36))
    key_id: Mapped[str] = mapped_column(String(50))
    role: Mapped[str] = mapped_column(String(16))
    secret_version: Mapped[int] = mapped_column(Integer)
    permissions: Mapped[list] = mapped_column(JSON)
    csrf_token: Mapped[str] = mapped_column(String(64))  # asked of every form the session posts
    # {form token: the page its submission led to}: a form sent again (a reload, the back button) is
    # answered with that page and changes nothing. The latest few only (keyhouse.console.sessions).
    submitted: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    # {reveal id: {key_id, what, until, sealed}}: a new secret, sealed under a key derived from the browser's
    # cookie (which only the browser holds), kept until its one page is viewed.
    reveals: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_org_id", "organization_id", "id"),
                      Index("ix_audit_webhook_pending", "id", postgresql_where=text("webhook_pending"),
                            sqlite_where=text("webhook_pending")),
                      Index("ix_audit_org_target", "organization_id", "target_id", "id"),
                      Index("ix_audit_org_feed", "organization_id", "feed_position",
                            postgresql_where=text("feed_position IS NOT NULL"),
                            sqlite_where=text("feed_position IS NOT NULL")))

    # 64 bits: at 1,000 events a second a 32-bit id runs out in 25 days. (SQLite's INTEGER PRIMARY KEY, the
    # row id, is 64 bits already, and only it autoincrements.)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    # Null for a failed authentication whose key is unknown: no organization to show it to.
    organization_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    actor_user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    actor_key_id: Mapped[str | None] = mapped_column(String(50), nullable=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What a change changed: {field: [old, new]}, for fields that are not secret.
    changes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # An event of the change feed: its place in the feed's order (the cursor), set by the database as its
    # transaction commits (migration 0011's trigger); null for the others, and for a change not yet committed.
    feed_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The webhooks' outbox: true for an event webhooks may be told of, until the dispatcher has made its
    # deliveries (keyhouse.webhooks); written with the event, in the changing transaction.
    webhook_pending: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class Webhook(Base):
    """An organization's endpoint, and the events it is told of (keyhouse.webhooks). Its signing secret is
    kept sealed under a key derived from the server secret; after a rotation the previous one keeps signing
    beside it until `previous_until`."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_org", "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret_sealed: Mapped[str] = mapped_column(Text)
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # How long before a key expires the endpoint is told (key.expiring), and at how few credits left it is
    # told they are low (key.credits_low): its own choices (migration 0017).
    expiring_lead_seconds: Mapped[int] = mapped_column(Integer, default=7 * 86400, server_default=str(7 * 86400))
    credits_low_threshold: Mapped[int] = mapped_column(Integer, default=10, server_default="10")


class WebhookDelivery(Base):
    """One event to one endpoint: pending until delivered (a 2xx) or failed (no 2xx within a day of tries).
    A sender claims it (`locked_until`) before it sends, so several workers and hosts never send it at once;
    one that dies mid-send leaves the claim to lapse, and it is sent again: at least once."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        # In order per key: a delivery waits while an earlier one to the same endpoint about the same key is pending.
        Index("ix_webhook_deliveries_order", "webhook_id", "target_id", "id",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body sent, and signed
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
