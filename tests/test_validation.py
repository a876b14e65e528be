"""Validation: compiled schemas, OpenAPI's nullable, formats, and responses held to the contract."""

import fastjsonschema
import pytest

from keyhouse.validation import compiled, to_json_schema
from tests.helpers import API


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


def test_both_backends_read_the_spec_alike():
    """Requests are checked by fastjsonschema, responses by jsonschema-rs: on every schema of the spec with a
    pattern or a format, the two must agree on what is valid (one regex dialect, the same formats)."""
    import jsonschema_rs

    from keyhouse import spec
    from keyhouse.validation import compiled_response

    samples = ["", "a", "\x00", "a\x00b", "documents", "documents:getDocument", "Documents", "x" * 300, "é",
               "192.0.2.1", "192.0.2.300", "192.0.2.0/24", "192.0.2.0/33", "2001:db8::1", "2001:db8::/129", "::1",
               "10.0.0.1\n", "2026-05-04T09:42:00Z", "2026-05-04T09:42:00+02:00", "2026-13-04T09:42:00Z",
               "not-a-date", "kh_4fTq9Zk2LmP8xR1vN6bY3cW7hJ0sD5gA0kQx2M", "123", "0123456789012345678", "a b", "!~"]
    checked = 0
    for name, schema in spec.document()["components"]["schemas"].items():
        if schema.get("type") != "string" or not ({"pattern", "format"} & set(schema)):
            continue
        fast, rust = compiled(schema), compiled_response(schema)
        for sample in samples:
            try:
                fast(sample)
                accepted = True
            except fastjsonschema.JsonSchemaValueException:
                accepted = False
            assert rust.is_valid(sample) == accepted, (name, sample)
        checked += 1
    assert checked >= 5
    assert isinstance(compiled_response({"type": "string"}), jsonschema_rs.Draft4Validator)
