"""Credits: how many more verifications a key is good for, and when they are topped up.

Pure functions over what the store holds. The spend itself is one conditional UPDATE
(store.api_keys.spend_credits); a refill that is due is made by the next spend, so what is left *now* is
the refill's amount once its interval has passed, whatever the stored count says.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def left(remaining: int | None, refill_amount: int | None, refill_seconds: int | None,
         refilled_at: datetime | None, now: datetime) -> int | None:
    """The uses left at `now`; None for a key without credits (unlimited)."""
    if remaining is None:
        return None
    if refill_due(refill_amount, refill_seconds, refilled_at, now):
        return refill_amount
    return remaining


def refill_due(refill_amount: int | None, refill_seconds: int | None, refilled_at: datetime | None,
               now: datetime) -> bool:
    return (refill_amount is not None and refill_seconds is not None and refilled_at is not None
            and refilled_at + timedelta(seconds=refill_seconds) <= now)


def next_refill(refill_amount: int | None, refill_seconds: int | None, refilled_at: datetime | None,
                now: datetime) -> datetime | None:
    """When the key's credits are next topped up, as of a spend at `now` (which makes a refill that is due);
    None for a key without a refill."""
    if refill_amount is None or refill_seconds is None or refilled_at is None:
        return None
    last = now if refill_due(refill_amount, refill_seconds, refilled_at, now) else refilled_at
    return last + timedelta(seconds=refill_seconds)
