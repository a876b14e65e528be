"""What the handlers share: time formats, paging headers, who may see a key, what a new key may hold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from .. import keys, platforms
from ..auth import Principal
from ..errors import ApiError, FieldError
from ..runtime import Runtime
from ..store import api_keys, platform_apis
from ..store.models import ApiKey


def _utc(moment: datetime) -> datetime:
    # The store hands out UTC already; converting only what is not spares a third of the cost, forty
    # times a page.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second, as the billing and workspace APIs write it."""
    return _utc(moment).isoformat(timespec="seconds")[:19] + "Z"


def iso_ms(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the millisecond: the times in a verdict, which a gateway acts on (a
    rate limit's reset, a refill, an expiry) and which must never read earlier than they are."""
    return _utc(moment).isoformat(timespec="milliseconds")[:23] + "Z"


def iso_offset(moment: datetime) -> str:
    """RFC 3339 in UTC with `+00:00`, to the second, as the cloud API writes it."""
    return _utc(moment).isoformat(timespec="seconds")[:19] + "+00:00"


def new_secret(rt: Runtime) -> tuple[str, api_keys.Hashed]:
    """A new secret: the plaintext the response shows once, and what the store keeps of it."""
    new = keys.new(rt.settings.secret, rt.settings.key_prefix)
    return new.plaintext, api_keys.Hashed(new.hash, new.hint)


def paging_headers(total: int, limit: int, offset: int) -> dict[str, str]:
    """The `Pagination-*` headers the spec declares for paged lists; the total counts the collection."""
    return {"Pagination-Total": str(total), "Pagination-Limit": str(limit), "Pagination-Offset": str(offset)}


def granted(rt: Runtime, me: Principal, requested: list[str] | None, key_type: str,
            locate: Callable[[str], tuple[str, ...]] = lambda _: ()) -> list[str]:
    """The permissions of a key `me` is making: those requested (`locate` says where in the body each is),
    or by default the creator's own (a publishable key's: none).

    Refuses a name of the organization's own APIs that none of them declares (422, naming the field), and
    (403, a policy and not a schema matter) what the creator does not hold, writing operations for a
    publishable key, and any permission of the organization's own APIs for one.
    """
    policy = rt.policy
    if requested is None:
        # A publishable key may ship in a web page: it holds what it is given by name, nothing by default.
        wanted = [] if key_type == "publishable" else list(me.permissions)
    else:
        wanted = list(dict.fromkeys(requested))
        refuse_unknown_permissions(rt, wanted, locate)
    own = [p for p in wanted if platforms.qualified(p) is None]
    theirs = [p for p in wanted if platforms.qualified(p) is not None]
    why = policy.grantable([p for p in me.permissions if platforms.qualified(p) is None], me.key_type, own, key_type)
    if why is None and theirs:
        with rt.store.reading() as s:
            definitions = platform_apis.definitions(s, me.organization_id, [p.partition(":")[0] for p in theirs])
        if unknown := platforms.unknown(theirs, definitions):
            raise ApiError("invalid_body", f"Not a permission of the organization's APIs: {', '.join(unknown)}",
                           fields=[FieldError(locate(p), "not a permission of the organization's APIs", "enum")
                                   for p in unknown])
        if key_type == "publishable":
            why = "publishable keys hold no permission of the organization's own APIs: " + ", ".join(theirs)
        elif over := platforms.beyond(list(me.permissions), theirs, definitions):
            why = "a key cannot grant more than its creator holds: " + ", ".join(over)
    if why is None:
        return wanted
    raise ApiError("forbidden", why[0].upper() + why[1:] + ".")


def refuse_unknown_permissions(rt: Runtime, names: list[str], locate: Callable[[str], tuple[str, ...]]) -> None:
    """422 for the names that are neither keyhouse's permissions nor an API's `<api>:<permission>`.

    A schema that admits an API's own names (`NamedPermission`, for verify's `api` and a billing ACL
    entry's `scope.api`) lets them through where no API is named beside them."""
    policy = rt.policy
    strangers = [p for p in names if platforms.qualified(p) is None and p != platforms.ALL
                 and p not in policy.operations]
    if strangers:
        raise ApiError("invalid_body", f"Not a permission of keyhouse: {', '.join(strangers)}; name the API it is "
                       "of (`<api>:<permission>`, or the API beside it).",
                       fields=[FieldError(locate(p), "not a permission of keyhouse", "enum") for p in strangers])


def may_see(me: Principal, owner_user_id: str, *, own_only: bool = False) -> bool:
    """Whose keys a caller may see and change: its own; an admin's, every key of its organization (unless
    the family shows only one's own keys, as the workspace family does). Other organizations' keys are
    never asked about: every query is scoped to the caller's organization."""
    return owner_user_id == me.user_id or (me.is_admin and not own_only)


def visible_key(s: Session, me: Principal, key_id: str, *, own_only: bool = False, include_revoked: bool = False,
                for_update: bool = False) -> ApiKey:
    """The key `me` may see, or 404: a key it may not see does not exist for it (never a telling 403)."""
    row = api_keys.get_key(s, me.organization_id, key_id, include_revoked=include_revoked, for_update=for_update)
    if row is None or not may_see(me, row.user_id, own_only=own_only):
        raise ApiError("not_found", "The API key can't be found.", code="api_keys.key_not_found")
    return row
