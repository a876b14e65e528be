"""Validation: compiled schemas, OpenAPI's nullable, formats, and responses held to the contract."""

import fastjsonschema
import pytest

from keyhouse.validation import compiled, to_json_schema

API = "/api/v1"


def test_nullable_becomes_a_null_type():
    schema = {"type": "array", "nullable": True, "items": {"type": "string", "format": "ipv4"}}
    check = compiled(schema)
    assert check(None) is None
    assert check(["192.0.2.1"])
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        check(["192.0.2.300"])


def test_the_spec_address_schemas_take_addresses_and_blocks_and_nothing_else():
    from keyhouse import spec

    schemas = spec.document()["components"]["schemas"]
    check = compiled(schemas["IpAddressOrCidr"])
    for good in ("192.0.2.1", "192.0.2.0/24", "0.0.0.0/0", "2001:db8::1", "2001:db8::/32", "::/0", "::1"):
        check(good)
    for bad in ("192.0.2.300", "192.0.2.0/33", "2001:db8::/129", "not an ip", "10.0.0.1\n", "", "1.2.3"):
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            check(bad)


def test_nullable_enum_admits_null():
    assert to_json_schema({"type": "string", "enum": ["a"], "nullable": True})["enum"] == ["a", None]


def test_date_time_format_is_enforced():
    check = compiled({"type": "string", "format": "date-time"})
    check("2026-05-04T09:42:00Z")
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        check("not-a-date")


def test_a_non_conforming_response_is_a_documented_500_not_a_leak(client, world, monkeypatch):
    from keyhouse.api import billing

    real = billing._key
    monkeypatch.setattr(billing, "_key", lambda row: {**real(row), "createdTime": "yesterday"})
    r = client.get(f"{API}/api-keys", headers=world.acme_admin.billing)
    assert r.status_code == 500
    assert r.json() == {"type": "about:blank", "title": "Internal Server Error", "status": 500,
                        "detail": "An unexpected error occurred."}


def test_a_response_missing_a_required_field_is_caught(client, world, monkeypatch):
    from keyhouse.api import workspace

    real = workspace._key
    monkeypatch.setattr(workspace, "_key", lambda row: {k: v for k, v in real(row).items() if k != "masked_key"})
    r = client.get(f"{API}/user/api-keys", headers=world.acme_admin.bearer)
    assert r.status_code == 500 and r.json()["type"] == "internal_error"
