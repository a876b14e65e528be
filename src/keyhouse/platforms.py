"""What an organization's own APIs declare: the permissions keys can hold for them.

An API is declared by its OpenAPI document (3.0 or 3.1, JSON or YAML text) or by a list of scopes. A
document's operationIds are its permissions; its tags and its security scopes group them (`tag:<tag>`,
`scope:<scope>`), so that a key can hold a group at once. Pure functions: text in, names out.

A document is a client's text, read with care: YAML aliases are refused (a few bytes of them expand
into more than any reader can walk), and so is nesting past a bound (the YAML composer and every reader
after it recurse once per level: 500 levels are a 1 kB body and a RecursionError), and every `$ref`
that is not local (validating it would make keyhouse fetch whatever URL a client names). Only OpenAPI 3
is read: a Swagger 2.0 document's `basePath` would put the guarded paths somewhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Invalid(ValueError):
    """The definition cannot be declared; the message says what is wrong, for the client."""


@dataclass(frozen=True)
class Declared:
    source: str  # "openapi" | "scopes"
    permissions: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)


class _Loader(yaml.SafeLoader):
    """YAML (and so JSON) without aliases, nested at most `max_depth` levels."""

    max_depth = 64

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        depth = getattr(self, "_depth", 0) + 1
        if depth > self.max_depth:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {self.max_depth} levels",
                                              self.peek_event().start_mark)
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1


def _load(text: str, max_depth: int):  # type: ignore[no-untyped-def]
    loader = _Loader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def from_scopes(scopes: list[str]) -> Declared:
    return Declared("scopes", sorted(scopes))


def from_openapi(text: str, name_ok: Callable[[str], bool], max_depth: int) -> Declared:
    """The permissions and groups of an OpenAPI document; `name_ok` says which names a permission may have,
    `max_depth` how deep the document may nest."""
    try:
        document = _load(text, max_depth)
    except yaml.YAMLError as e:
        raise Invalid(f"not JSON or YAML: {_first_line(str(e))}") from None
    if not isinstance(document, dict):
        raise Invalid("not an OpenAPI document: its top level is no object")
    _openapi_3(document)
    if (remote := _remote_ref(document)) is not None:
        raise Invalid(f"$ref {remote!r} is not local to the document (only '#/...' references are read)")
    # Imported here: the validator costs a worker about 12 MB, and only declaring an API needs it.
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    try:
        validate(document)
    except OpenAPIValidationError as e:
        where = getattr(e, "json_path", "") or "$"
        raise Invalid(f"not a valid OpenAPI document: {_first_line(e.message)} (at {where})") from None
    except Exception as e:  # noqa: BLE001 - the validator's own failures on odd input (a bad version, say)
        raise Invalid(f"not a valid OpenAPI document: {_first_line(str(e))}") from None
    if unnamed := [f"{method.upper()} {path}" for path, item in (document.get("paths") or {}).items()
                   for method, operation in (item or {}).items()
                   if method in METHODS and isinstance(operation, dict) and "operationId" not in operation]:
        raise Invalid("every operation needs an operationId (the permission that grants it); these have none: "
                      + ", ".join(unnamed[:10]) + (f" and {len(unnamed) - 10} more" if len(unnamed) > 10 else ""))
    permissions: set[str] = set()
    groups: dict[str, set[str]] = {}
    default_security = document.get("security") or []
    for item in (document.get("paths") or {}).values():
        for method, operation in (item or {}).items():
            if method not in METHODS or not isinstance(operation, dict):
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


def _openapi_3(document: dict) -> None:
    """Refuses what is not an OpenAPI 3.0 or 3.1 document, saying what it is instead."""
    if "swagger" in document:
        raise Invalid("a Swagger 2.0 document: only OpenAPI 3.0 and 3.1 are read (its basePath would put the "
                      "guarded paths elsewhere); convert it to OpenAPI 3 first")
    version = document.get("openapi")
    if version is None:
        raise Invalid("not an OpenAPI document: it has no `openapi` field (such as openapi: '3.0.3')")
    if not isinstance(version, str):
        raise Invalid(f"`openapi` is the number {version!r}, not a version string: quote it "
                      "(openapi: '3.0.3'), as YAML reads an unquoted 3.0 as a number")
    if not version.startswith(("3.0.", "3.1.")):
        raise Invalid(f"OpenAPI {version!r}: only 3.0.x and 3.1.x documents are read")


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


# ------------------------------------------------------------------ what keys hold of them

ALL = "*"
# What an organization's APIs declare, by name: (permissions, groups), as stored.
Definitions = dict[str, tuple[list[str], dict[str, list[str]]]]


def qualified(permission: str) -> tuple[str, str] | None:
    """("documents", "getDocument") for "documents:getDocument"; None for keyhouse's own permissions."""
    api, sep, name = permission.partition(":")
    return (api, name) if sep else None


def of(api: str, names: list[str]) -> list[str]:
    """Names given beside an API (verify's `api`, a billing ACL entry's `scope.api`), as keys hold them:
    `getDocument` -> `documents:getDocument`, `*` -> `documents:*`. Every name is the API's, colons and all."""
    return [f"{api}:{name}" for name in names]


def members(definition: tuple[list[str], dict[str, list[str]]], name: str) -> set[str]:
    """The permissions a name of an API stands for: itself, a group's members, or all of them ('*')."""
    permissions, groups = definition
    if name == ALL:
        return set(permissions)
    if name in groups:
        return set(groups[name])
    return {name} if name in permissions else set()


def unknown(requested: list[str], definitions: Definitions) -> list[str]:
    """The qualified names among `requested` that no API of the organization declares."""
    return [p for p in requested if (q := qualified(p)) is not None
            and (q[0] not in definitions or not members(definitions[q[0]], q[1]))]


def held(holder: list[str], api: str, definitions: Definitions) -> set[str]:
    """The permissions of `api` that a key holding `holder` holds (`*` holds them all)."""
    if api not in definitions:
        return set()  # an API no longer declared grants nothing
    if ALL in holder:
        return set(definitions[api][0])
    found: set[str] = set()
    for entry in holder:
        if (q := qualified(entry)) is not None and q[0] == api:
            found |= members(definitions[api], q[1])
    return found


def holds(holder: list[str], permission: str, definitions: Definitions) -> bool:
    """Whether a key holding `holder` holds the qualified `permission` (or every member of its group)."""
    api, name = qualified(permission) or ("", "")
    wanted = members(definitions[api], name) if api in definitions else set()
    return bool(wanted) and wanted <= held(holder, api, definitions)


def beyond(creator: list[str], requested: list[str], definitions: Definitions) -> list[str]:
    """The qualified names among `requested` that grant more than `creator` holds."""
    return [p for p in requested if qualified(p) is not None and not holds(creator, p, definitions)]


def kept(holder: list[str], api: str, definitions: Definitions) -> list[str]:
    """`holder` without the names of `api` that its definition (if any) no longer declares."""
    return [p for p in holder if (q := qualified(p)) is None or q[0] != api
            or (api in definitions and members(definitions[api], q[1]))]
