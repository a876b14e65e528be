"""What an organization's own APIs declare: the permissions keys can hold for them.

An API is declared by its OpenAPI document (3.0 or 3.1, JSON or YAML text) or by a list of scopes. A
document's operationIds are its permissions; its tags and its security scopes group them (`tag:<tag>`,
`scope:<scope>`), so that a key can hold a group at once. Pure functions: text in, names out.

A document is a client's text, read with care: YAML aliases are refused (a few bytes of them expand
into more than any reader can walk), and so is every `$ref` that is not local (validating it would make
keyhouse fetch whatever URL a client names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Invalid(ValueError):
    """The definition cannot be declared; the message says what is wrong, for the client."""


@dataclass(frozen=True)
class Declared:
    source: str  # "openapi" | "scopes"
    permissions: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)


class _Loader(yaml.SafeLoader):
    """YAML (and so JSON) without aliases."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        return super().compose_node(parent, index)


def from_scopes(scopes: list[str]) -> Declared:
    return Declared("scopes", sorted(scopes))


def from_openapi(text: str, name_ok: Callable[[str], bool]) -> Declared:
    """The permissions and groups of an OpenAPI document; `name_ok` says which names a permission may have."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader, without aliases
    except yaml.YAMLError as e:
        raise Invalid(f"not JSON or YAML: {_first_line(str(e))}") from None
    if not isinstance(document, dict):
        raise Invalid("not an OpenAPI document: its top level is no object")
    if (remote := _remote_ref(document)) is not None:
        raise Invalid(f"$ref {remote!r} is not local to the document (only '#/...' references are read)")
    try:
        validate(document)
    except OpenAPIValidationError as e:
        where = getattr(e, "json_path", "") or "$"
        raise Invalid(f"not a valid OpenAPI document: {_first_line(e.message)} (at {where})") from None
    except Exception as e:  # noqa: BLE001 - the validator's own failures on odd input (a bad version, say)
        raise Invalid(f"not a valid OpenAPI document: {_first_line(str(e))}") from None
    permissions: set[str] = set()
    groups: dict[str, set[str]] = {}
    default_security = document.get("security") or []
    for item in (document.get("paths") or {}).values():
        for method, operation in (item or {}).items():
            if method not in METHODS or not isinstance(operation, dict) or "operationId" not in operation:
                continue
            operation_id = str(operation["operationId"])
            if not name_ok(operation_id):
                raise Invalid(f"operationId {operation_id!r} cannot be a permission's name")
            permissions.add(operation_id)
            for tag in operation.get("tags") or []:
                groups.setdefault(f"tag:{tag}", set()).add(operation_id)
            for requirement in operation.get("security", default_security) or []:
                for scopes in requirement.values():
                    for scope in scopes or []:
                        groups.setdefault(f"scope:{scope}", set()).add(operation_id)
    if not permissions:
        raise Invalid("the document declares no operationId: it has nothing to grant")
    return Declared("openapi", sorted(permissions), {name: sorted(members) for name, members in sorted(groups.items())})


def _remote_ref(node) -> str | None:  # type: ignore[no-untyped-def]
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


def _first_line(message: str) -> str:
    return message.strip().split("\n", 1)[0][:300]
