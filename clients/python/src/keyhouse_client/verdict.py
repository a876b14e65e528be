"""What keyhouse's verify answers, as a value."""

from __future__ import annotations

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

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Verdict:
        return cls(valid=body["valid"], code=body["code"], key_id=body.get("key_id"),
                   organization_id=body.get("organization_id"), user_id=body.get("user_id"), type=body.get("type"),
                   permissions=tuple(body.get("permissions") or ()), name=body.get("name"),
                   owner_id=body.get("owner_id"), meta=body.get("meta"), expires_at=_moment(body.get("expires_at")),
                   secret_valid_until=_moment(body.get("secret_valid_until")), remaining=body.get("remaining"),
                   rate_limit=body.get("rate_limit"))

    @property
    def retry_after(self) -> int | None:
        """Seconds until a rate-limited key may be verified again (RATE_LIMITED only)."""
        if self.code != "RATE_LIMITED" or not self.rate_limit:
            return None
        reset = datetime.fromisoformat(self.rate_limit["reset_at"])
        return max(1, int((reset - datetime.now(reset.tzinfo)).total_seconds() + 0.999))
