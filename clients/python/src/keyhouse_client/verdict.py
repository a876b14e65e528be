"""What keyhouse's verify answers, as a value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Verdict:
    """keyhouse's verdict on a key (`POST /keys/verify`): `valid`, its `code`, and what keyhouse knows of the
    key. Never holds the key itself."""

    valid: bool
    code: str  # VALID, NOT_FOUND, EXPIRED, REVOKED, FORBIDDEN, INSUFFICIENT_PERMISSIONS, RATE_LIMITED, USAGE_EXCEEDED
    key_id: str | None = None
    organization_id: str | None = None
    user_id: str | None = None
    type: str | None = None
    permissions: tuple[str, ...] = ()
    name: str | None = None
    owner_id: str | None = None
    meta: dict[str, Any] | None = None
    expires_at: datetime | None = None
    secret_valid_until: datetime | None = None
    remaining: int | None = None  # credits left, for a key that has credits
    rate_limit: dict[str, Any] | None = None  # limit, remaining, reset_at: for a key with a limit of its own
    refill_at: datetime | None = None  # when a key with credits is next topped up

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Verdict:
        return cls(valid=body["valid"], code=body["code"], key_id=body.get("key_id"),
                   organization_id=body.get("organization_id"), user_id=body.get("user_id"), type=body.get("type"),
                   permissions=tuple(body.get("permissions") or ()), name=body.get("name"),
                   owner_id=body.get("owner_id"), meta=body.get("meta"), expires_at=_moment(body.get("expires_at")),
                   secret_valid_until=_moment(body.get("secret_valid_until")), remaining=body.get("remaining"),
                   rate_limit=body.get("rate_limit"), refill_at=_moment(body.get("refill_at")))

    @property
    def retry_after(self) -> int | None:
        """Whole seconds (rounded up) until a refused key may be verified again: its rate limit's reset
        (RATE_LIMITED), or its credits' next refill (USAGE_EXCEEDED); None when keyhouse names no time."""
        if self.code == "RATE_LIMITED" and self.rate_limit:
            again: datetime | None = datetime.fromisoformat(self.rate_limit["reset_at"])
        elif self.code == "USAGE_EXCEEDED":
            again = self.refill_at
        else:
            return None
        if again is None:
            return None
        return max(1, math.ceil((again - datetime.now(again.tzinfo)).total_seconds()))
