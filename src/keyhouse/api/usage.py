"""Usage: `GET /keys/{key_id}/usage` and `GET /usage`, the verdicts on keys counted per minute, hour or day.

The counts are written by the recorder (keyhouse.recorder, keyhouse.store.usage); these read them. A key's
usage is its own: a member sees its own keys' only, as with the keys themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .. import spec
from ..auth import principal
from ..runtime import Runtime
from ..store import usage
from ..store.models import utcnow
from .common import iso_z, paging_headers, visible_key

BUCKET = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = spec.schema(spec.document(), "UsageBuckets")["maxItems"]  # 1,440: a day of minutes
DEFAULT_BUCKETS = {"minute": 60, "hour": 24, "day": 30}  # `from`, when not given, is this many before `to`
ADDRESSES = spec.schema(spec.document(), "KeyUsage")["properties"]["addresses"]["maxItems"]
# Every outcome a bucket shows, zero or not (the spec's UsageOutcomes): the verifier's codes but NOT_FOUND,
# which is no key's.
OUTCOMES = ("VALID", "EXPIRED", "REVOKED", "FORBIDDEN", "INSUFFICIENT_PERMISSIONS", "RATE_LIMITED", "USAGE_EXCEEDED")


def _span(granularity: str, since: str | None, until: str | None) -> tuple[datetime, datetime]:
    """[from, to) as asked: `from` moved back to the start of its bucket, and up to MAX_BUCKETS before `to`
    (the answer's `from` says where counting began); `from` at or after `to` is an empty span."""
    # The spec checked both are RFC 3339, with an offset; buckets are UTC's minutes, hours and days.
    end = datetime.fromisoformat(until).astimezone(UTC) if until else utcnow()
    start = datetime.fromisoformat(since).astimezone(UTC) if since else \
        _before(end, DEFAULT_BUCKETS[granularity] * BUCKET[granularity])
    earliest = _before(end, MAX_BUCKETS * BUCKET[granularity])
    start = usage.truncate(max(start, earliest), granularity)
    if start < earliest:  # its bucket begins before the earliest: the next is the first whole one
        start += BUCKET[granularity]
    return start, end


def _before(moment: datetime, span: timedelta) -> datetime:
    """`span` before `moment`, or the earliest moment there is (a `to` in the year 4, say)."""
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _buckets(found: list[usage.Bucket]) -> list[dict]:
    """The rows of (start, outcome, count), oldest first, as the spec's buckets: one per start."""
    buckets: list[dict] = []
    for start, outcome, count in found:
        if not buckets or buckets[-1]["_start"] != start:
            buckets.append({"_start": start, "start": iso_z(start), "total": 0,
                            "outcomes": dict.fromkeys(OUTCOMES, 0)})
        bucket = buckets[-1]
        bucket["total"] += count
        if outcome in bucket["outcomes"]:
            bucket["outcomes"][outcome] += count
    for bucket in buckets:
        del bucket["_start"]
    return buckets


def get_key_usage(token_info: dict, key_id: str, granularity: str = "day", from_: str | None = None,
                  to: str | None = None, *, rt: Runtime):
    me = principal(token_info)
    start, end = _span(granularity, from_, to)
    with rt.store.reading() as s:
        key = visible_key(s, me, key_id)  # a revoked key is gone as a resource; `GET /usage` keeps its history
        found = usage.key_buckets(s, [key.pk], granularity, start, end).get(key.pk, [])
        seen = usage.addresses(s, key.pk, ADDRESSES)
        addresses = [{"ip": a.ip, "count": a.count, "first_seen_at": iso_z(a.first_seen_at),
                      "last_seen_at": iso_z(a.last_seen_at)} for a in seen]
    return {"key_id": key_id, "granularity": granularity, "from": iso_z(start), "to": iso_z(end),
            "buckets": _buckets(found), "addresses": addresses}


def list_usage(token_info: dict, granularity: str = "day", from_: str | None = None, to: str | None = None,
               key_id: list[str] | None = None, owner_id: str | None = None, limit: int = 20, offset: int = 0, *,
               rt: Runtime):
    me = principal(token_info)
    start, end = _span(granularity, from_, to)
    with rt.store.reading() as s:
        found = usage.report(s, me.organization_id, granularity, start, end,
                             user_id=None if me.is_admin else me.user_id, owner_id=owner_id,
                             key_ids=list(dict.fromkeys(key_id)) if key_id else None, limit=limit, offset=offset)
    body = {"granularity": granularity, "from": iso_z(start), "to": iso_z(end), "total": _buckets(found.total),
            "keys": [{"key_id": kid, "buckets": _buckets(buckets)} for kid, buckets in found.page]}
    return body, 200, paging_headers(found.keys, limit, offset)
