"""Validator backends on keyhouse's own schemas: fastjsonschema (what keyhouse compiles today) against
jsonschema-rs, on what each request validates (a 20-item billing page as a response, a verify request and
its verdict).

    .venv/bin/pip install jsonschema-rs && .venv/bin/python benchmarks/validators.py

Both get the same draft-4 schema (keyhouse.validation.to_json_schema of the spec's, references resolved);
each instance is checked to be accepted by both first, and a broken copy to be refused by both. Reported:
microseconds per validation (best of 5 runs of N), this machine.
"""

from __future__ import annotations

import copy
import time

import fastjsonschema

from keyhouse import spec
from keyhouse.validation import to_json_schema

N = 2000


def resolved(node, document):
    if isinstance(node, dict):
        if "$ref" in node:
            target = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(target, document)
        return {k: resolved(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [resolved(v, document) for v in node]
    return node


def schema_of(name: str, document: dict) -> dict:
    return {"$schema": "http://json-schema.org/draft-04/schema#",
            **to_json_schema(resolved(document["components"]["schemas"][name], document))}


def best(fn, instance) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(N):
            fn(instance)
        times.append((time.perf_counter() - start) / N)
    return min(times) * 1e6


def main() -> None:
    import jsonschema_rs

    document = spec.document()
    key = {"id": "4f6cf35a-2c4b-483c-a0a9-158621f77a21", "description": "Test", "type": "secret",
           "allowedIps": ["192.0.2.10"], "createdTime": "2026-05-04T09:42:00Z", "updatedTime": "2026-05-04T09:42:00Z",
           "_links": [{"href": "/api/v1/api-keys/4f6cf35a-2c4b-483c-a0a9-158621f77a21", "rel": "self"}]}
    cases = {
        "billing page of 20 (response)": ({"type": "array", "items": schema_of("BillingApiKey", document)},
                                          [dict(key, id=f"k{i}") for i in range(20)]),
        "verify request": (schema_of("VerifyKeyRequest", document),
                           {"key": "kh_4fTq9Zk2LmP8xR1vN6bY3cW7hJ0sD5gA0kQx2M", "permissions": ["getApiKeyCollection"],
                            "ip": "192.0.2.10", "cost": 1}),
        "verify verdict (response)": (schema_of("VerifyKeyResponse", document),
                                      {"valid": True, "code": "VALID", "key_id": "k", "organization_id": "o",
                                       "user_id": "u", "type": "secret", "permissions": ["*"], "expires_at": None,
                                       "name": "n", "owner_id": None, "meta": None, "remaining": None,
                                       "secret_valid_until": None}),
    }
    print(f"{'case':34} {'fastjsonschema':>15} {'jsonschema-rs':>15}   (us per validation, best of 5 x {N})")
    for name, (schema, instance) in cases.items():
        if name.startswith("billing"):
            schema = {"$schema": "http://json-schema.org/draft-04/schema#", **schema}
        fast = fastjsonschema.compile(schema)
        rust = jsonschema_rs.validator_for(schema)
        fast(instance)
        assert rust.is_valid(instance), name
        broken = copy.deepcopy(instance)
        if isinstance(broken, list):
            broken[5]["type"] = "neither"
        else:
            broken["code" if "code" in broken else "key"] = 7
        assert not rust.is_valid(broken)
        try:
            fast(broken)
            raise AssertionError(f"fastjsonschema accepted a broken {name}")
        except fastjsonschema.JsonSchemaValueException:
            pass
        print(f"{name:34} {best(fast, instance):15.1f} {best(rust.validate, instance):15.1f}")


if __name__ == "__main__":
    main()
