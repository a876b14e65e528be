"""One module per family; one function per operationId, named for it (see keyhouse.app._handlers)."""

from __future__ import annotations

from datetime import datetime, timezone

from .. import runtime
from ..auth import Principal
from ..errors import ApiError


def iso_z(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second, as the billing and workspace APIs write it."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")[:19] + "Z"


def iso_offset(moment: datetime) -> str:
    """RFC 3339 in UTC with `+00:00`, to the second, as the cloud API writes it."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")[:19] + "+00:00"


def paging_headers(total: int, limit: int, offset: int) -> dict[str, str]:
    """The `Pagination-*` headers the spec declares for paged lists; the total counts the collection."""
    return {"Pagination-Total": str(total), "Pagination-Limit": str(limit), "Pagination-Offset": str(offset)}


def granted(me: Principal, requested: list[str] | None, key_type: str) -> list[str]:
    """The permissions of a key `me` is making: those requested, or by default the creator's own.

    Refuses (403, a policy and not a schema matter) what the creator does not hold, and writing
    operations for a publishable key.
    """
    policy = runtime.current().policy
    if requested is None:
        wanted = [p for p in me.permissions if key_type != "publishable" or p not in policy.writes]
    else:
        wanted = list(dict.fromkeys(requested))
    why = policy.grantable(list(me.permissions), me.key_type, wanted, key_type)
    if why is None:
        return wanted
    raise ApiError("forbidden", why[0].upper() + why[1:] + ".")


def only_admins(me: Principal) -> None:
    if not me.is_admin:
        raise ApiError("forbidden", "Only administrators of the organization may do this.")
