"""The contract itself: valid OpenAPI 3.0.3, friendly to client generators, and fully served."""

import re

import pytest
from openapi_spec_validator import validate

from keyhouse import spec
from keyhouse.api import HANDLERS
from keyhouse.app import check_handlers
from tests.victims import signed

SPEC = spec.document()
OPERATIONS = [(path, method, op) for path, item in SPEC["paths"].items()
              for method, op in item.items() if method in {"get", "post", "put", "delete", "patch"}]


def test_spec_is_valid_openapi_3_0_3():
    assert SPEC["openapi"] == "3.0.3"
    validate(SPEC)


def test_every_operation_has_a_unique_camel_case_id_a_tag_and_a_summary():
    ids = [op["operationId"] for _, _, op in OPERATIONS]
    assert len(ids) == len(set(ids))
    for _, _, op in OPERATIONS:
        assert re.fullmatch(r"[a-z][A-Za-z]+", op["operationId"])
        assert op.get("tags") and op.get("summary") and op.get("description")


def test_every_operation_has_exactly_one_handler_and_every_handler_an_operation():
    assert {op["operationId"] for _, _, op in OPERATIONS} == set(HANDLERS)
    check_handlers(SPEC)
    # The check that refuses to start: a spec with an operation no handler serves.
    doctored = {**SPEC, "paths": {**SPEC["paths"], "/extra": {"get": {"operationId": "getExtra"}}}}
    with pytest.raises(RuntimeError, match="getExtra"):
        check_handlers(doctored)


def test_every_handler_is_named_for_its_operation():
    for operation_id, handler in HANDLERS.items():
        assert handler.__name__ == re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower(), operation_id


def _guarded(op) -> bool:
    return op.get("security", SPEC.get("security")) != []


def test_every_operation_documents_auth_and_server_errors():
    for path, method, op in OPERATIONS:
        # 400: strict validation refuses unknown query parameters on every operation; 413: the body cap
        # is checked before routing.
        assert {"400", "413", "500"} <= set(op["responses"]), (path, method)
        if _guarded(op):  # a credential is checked, rate-limited and looked up in the database
            assert {"401", "429", "503"} <= set(op["responses"]), (path, method)
        if "requestBody" in op:
            assert {"413", "415"} <= set(op["responses"]), (path, method)


def test_only_the_operators_checks_are_open():
    assert {op["operationId"] for _, _, op in OPERATIONS if not _guarded(op)} == {"getHealth", "getReadiness",
                                                                                   "getMetrics"}


def test_every_response_documents_the_request_id_header():
    responses = [(name, r) for name, r in SPEC["components"]["responses"].items()]
    responses += [(f"{method} {path} {status}", r) for path, method, op in OPERATIONS
                  for status, r in op["responses"].items() if "$ref" not in r]
    for name, response in responses:
        assert "X-Request-Id" in response.get("headers", {}), name


def test_every_schema_is_named_and_described():
    for name, schema in SPEC["components"]["schemas"].items():
        assert schema.get("description"), name


def test_every_cloud_error_documents_the_codes_header():
    for name, response in SPEC["components"]["responses"].items():
        if name.startswith("Cloud"):
            assert "x-cloud-error-codes" in response["headers"], name


def test_every_operation_with_path_parameters_documents_404():
    # A path parameter that no route can match (a newline, say) is a 404 from the router.
    for path, method, op in OPERATIONS:
        if "{" in path:
            assert "404" in op["responses"], (path, method)


def test_the_permission_enum_is_exactly_the_operations_keys_may_call():
    permissions = set(SPEC["components"]["schemas"]["Permission"]["enum"])
    assert permissions == {op["operationId"] for _, _, op in OPERATIONS if _guarded(op) and not signed(op)} | {"*"}


# The error responses the workspace family's source API documents for `GET /user/api-keys` (seed 003),
# by status and the title it gives each.
WORKSPACE_SOURCE_ERRORS = {400: "Invalid request", 401: "Authentication failed", 403: "Access forbidden",
                           404: "Not found", 409: "Already exists", 422: "Validation error",
                           426: "Upgrade required", 429: "Rate limited", 500: "Internal server error",
                           502: "Bad gateway", 504: "Gateway timeout"}


def test_the_workspace_list_documents_every_error_status_of_its_source_api():
    def resolved(response):
        if "$ref" in response:
            return SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        return response

    responses = SPEC["paths"]["/user/api-keys"]["get"]["responses"]
    for status, title in WORKSPACE_SOURCE_ERRORS.items():
        assert str(status) in responses, f"GET /user/api-keys does not document {status} {title}"
        response = resolved(responses[str(status)])
        assert response["description"].lower().startswith(title.lower()), (status, response["description"])
        content = response["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/WorkspaceError"}
        assert content["example"]["code"] == status


def test_every_operation_belongs_to_a_family_through_its_tag():
    """The envelope of an operation's errors is its tag's `x-keyhouse-family` (keyhouse.errors.ErrorEnvelopes)."""
    families = {tag["name"]: tag.get("x-keyhouse-family") for tag in SPEC["tags"]}
    assert set(families.values()) == {"cloud", "billing", "workspace", "keyhouse"}
    for _, _, op in OPERATIONS:
        assert families[op["tags"][0]], op["operationId"]
    assert {tag.get("x-keyhouse-area") for tag in SPEC["tags"] if families[tag["name"]] == "cloud"} == {
        "api_keys", "traffic_filter"}


def test_the_stores_feed_actions_are_the_contracts():
    """The store marks which audit events are changes of the feed without reading the contract: held here."""
    from keyhouse.store.trail import FEED_ACTIONS

    assert FEED_ACTIONS == set(SPEC["components"]["schemas"]["KeyChange"]["properties"]["action"]["enum"])
