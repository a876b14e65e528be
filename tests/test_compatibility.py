"""Semantic versioning of the contract, checked against the last released spec (openapi/released/).

Whatever a client can rely on (an operation, a parameter, a response status, a schema field or enum
value, a security scheme, an error code) may only disappear with a new major version. The CHANGELOG
names every version, and the package carries the spec's version.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml

from keyhouse import spec

ROOT = Path(__file__).resolve().parents[1]
CURRENT = spec.document()
METHODS = {"get", "put", "post", "delete", "patch"}


def version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"{text!r} is not a semantic version MAJOR.MINOR.PATCH"
    return tuple(int(part) for part in match.groups())


def released() -> tuple[tuple[int, int, int], dict]:
    """The last released spec: the highest version under openapi/released/."""
    specs = [yaml.safe_load(p.read_text()) for p in (ROOT / "openapi" / "released").glob("keyhouse-*.yaml")]
    assert specs, "no released spec is kept in openapi/released/"
    last = max(specs, key=lambda s: version(s["info"]["version"]))
    return version(last["info"]["version"]), last


def deref(spec: dict, node):
    """Follow local `$ref`s."""
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def surface(spec: dict) -> set[str]:
    """Everything of the contract a client may depend on, as comparable strings."""
    found: set[str] = set(f"security scheme {name}" for name in spec["components"]["securitySchemes"])

    def schema_fields(where: str, schema, depth: int = 0) -> None:
        schema = deref(spec, schema)
        if not isinstance(schema, dict) or depth > 8:
            return
        for value in schema.get("enum", []):
            found.add(f"{where} = {value}")
        for name, sub in schema.get("properties", {}).items():
            found.add(f"{where}.{name}")
            schema_fields(f"{where}.{name}", sub, depth + 1)
        if "items" in schema:
            schema_fields(f"{where}[]", schema["items"], depth + 1)
        for combinator in ("oneOf", "anyOf", "allOf"):
            for branch in schema.get(combinator, []):
                schema_fields(where, branch, depth + 1)

    for name, schema in spec["components"]["schemas"].items():
        schema_fields(name, schema)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            op_id = op["operationId"]
            found.add(f"operation {method.upper()} {path} ({op_id})")
            for param in [deref(spec, p) for p in item.get("parameters", []) + op.get("parameters", [])]:
                found.add(f"{op_id}: {param['in']} parameter {param['name']}")
            for status, response in op["responses"].items():
                response = deref(spec, response)
                found.add(f"{op_id}: response {status}")
                found.update(f"{op_id}: error code {code}" for code in _codes(response))
                for header in response.get("headers", {}):
                    found.add(f"{op_id}: response {status} header {header}")
    return found


def _codes(response: dict) -> set[str]:
    """The error codes a response documents: in its description, and in its examples' `code`s."""
    codes = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", response.get("description", "")))
    for media in response.get("content", {}).values():
        codes.update(re.findall(r"'code': '([a-z_]+\.[a-z_]+)'", str(media.get("example", ""))))
        codes.update(re.findall(r"'code': '([a-z_]+\.[a-z_]+)'", str(media.get("examples", ""))))
    return codes


def test_nothing_released_disappeared_without_a_major_version():
    (major, _, _), last = released()
    current = version(CURRENT["info"]["version"])
    gone = surface(last) - surface(CURRENT)
    assert not gone or current[0] > major, (
        f"these disappeared since {last['info']['version']} and {CURRENT['info']['version']} is no new major "
        f"version: {sorted(gone)}")


def test_the_version_moves_forward_and_everywhere_at_once():
    last, _ = released()
    current = version(CURRENT["info"]["version"])
    assert current >= last
    # The package's version is read from the contract when it is built (pyproject.toml's tool.hatch.version):
    # the installed one's metadata says what that read found.
    assert "version" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dynamic"]
    assert importlib.metadata.version("keyhouse") == CURRENT["info"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{CURRENT['info']['version']}]" in changelog
    assert f"## [{'.'.join(map(str, last))}]" in changelog


def test_the_check_sees_what_a_careless_change_would_remove():
    # The comparison is only worth its salt if it catches each kind of removal.
    before = surface(CURRENT)
    spec = copy.deepcopy(CURRENT)
    del spec["paths"]["/keys/verify"]
    spec["components"]["schemas"]["BillingApiKey"]["properties"].pop("apiUser")
    spec["components"]["schemas"]["VerifyKeyResponse"]["properties"]["code"]["enum"].remove("REVOKED")
    spec["components"]["responses"]["CloudKeyNotFound"]["description"] = "Not found."
    spec["components"]["responses"]["CloudKeyNotFound"]["content"]["application/json"].pop("example", None)
    gone = before - surface(spec)
    assert "operation POST /keys/verify (verifyKey)" in gone
    assert "BillingApiKey.apiUser" in gone
    assert "VerifyKeyResponse.code = REVOKED" in gone
    assert "getApiKey: error code api_keys.key_not_found" in gone
