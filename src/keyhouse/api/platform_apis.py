"""The APIs an organization guards with keyhouse: `/apis` and `/apis/{api_name}`, for its admins.

An API declares the permissions its keys may hold (keyhouse.platforms reads them from its OpenAPI
document, or takes its list of scopes). Replacing or deleting it takes what it no longer declares from
every key that held it, in the same transaction: no key keeps a dangling name. Errors are problem
details, as in keyhouse's other own operations.
"""

from __future__ import annotations

from .. import platforms, spec
from ..auth import principal
from ..errors import ApiError, FieldError
from ..runtime import Runtime
from ..store import platform_apis
from ..store.models import PlatformApi
from ..validation import compiled
from .billing import acl_kept
from .common import iso_z

_DOCUMENT = spec.document()
# APIs per organization: as many as the list of them may hold.
MAX_APIS = spec.schema(_DOCUMENT, "PlatformApis")["maxItems"]
_PERMISSION_NAME = compiled(spec.schema(_DOCUMENT, "PlatformPermissionName"))
# How deep a declared document may nest, as the contract states it.
MAX_DEPTH = spec.schema(_DOCUMENT, "PlatformApiDocument")["x-keyhouse-max-depth"]


def _name_ok(name: str) -> bool:
    try:
        _PERMISSION_NAME(name)
    except Exception:  # noqa: BLE001 - fastjsonschema's refusal: not a name the contract admits
        return False
    return True


def _view(row: PlatformApi) -> dict:
    return {"name": row.name, "source": row.source, "permissions": row.permissions, "groups": row.groups,
            "created_at": iso_z(row.created_at), "updated_at": iso_z(row.updated_at)}


def _definition(body: dict) -> dict:
    """What the body declares, as stored; a document that cannot be declared is 422 naming why."""
    if "scopes" in body:
        declared = platforms.from_scopes(body["scopes"])
    else:
        try:
            declared = platforms.from_openapi(body["openapi"], _name_ok, MAX_DEPTH)
        except platforms.Invalid as e:
            raise ApiError("invalid_body", f"openapi: {e}", fields=[FieldError(("openapi",), str(e))]) from None
    return {"source": declared.source, "document": body.get("openapi"), "permissions": declared.permissions,
            "groups": declared.groups}


def _find(s, organization_id: str, name: str, *, for_update: bool = False) -> PlatformApi:
    row = platform_apis.platform_api(s, organization_id, name, for_update=for_update)
    if row is None:
        raise ApiError("not_found", f"The organization declares no API named {name}.")
    return row


def list_platform_apis(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return [_view(row) for row in platform_apis.platform_apis(s, me.organization_id)]


def create_platform_api(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    definition = _definition(body)
    with rt.store.session() as s:
        if platform_apis.count_platform_apis(s, me.organization_id) >= MAX_APIS:
            raise ApiError("invalid_body", f"An organization declares at most {MAX_APIS} APIs; delete one first.")
        row = platform_apis.declare_platform_api(s, me.organization_id, body["name"], actor=me.actor(), **definition)
        if row is None:
            raise ApiError("conflict", f"The organization has declared an API named {body['name']} already.")
        return _view(row), 201


def get_platform_api(api_name: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return _view(_find(s, me.organization_id, api_name))


def replace_platform_api(api_name: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    definition = _definition(body)
    with rt.store.session() as s:
        row = _find(s, me.organization_id, api_name, for_update=True)
        platform_apis.redefine_platform_api(s, row, actor=me.actor(), **definition)
        now = {api_name: (row.permissions, row.groups)}
        platform_apis.strip_platform_permissions(s, me.organization_id, api_name,
                                           lambda held: platforms.kept(held, api_name, now), acl_kept)
        return _view(row), 200


def delete_platform_api(api_name: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        platform_apis.delete_platform_api(s, _find(s, me.organization_id, api_name, for_update=True), actor=me.actor())
        platform_apis.strip_platform_permissions(s, me.organization_id, api_name,
                                           lambda held: platforms.kept(held, api_name, {}), acl_kept)
    return None, 204
