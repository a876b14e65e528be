"""Whether an answer is one the spec documents for its operation: its status, its body's schema and its
required headers. Shared by the tests that send what a client should not, so that "never an answer
outside the contract" is checked the same way everywhere."""

from __future__ import annotations

import httpx

from keyhouse.validation import compiled
from tests.victims import SPEC, resolved

_RESPONSES: dict[tuple[str, str], dict] = {}  # resolved once: compiled validators are cached by object


def documented_response(op: dict, status: int) -> dict:
    key = (op["operationId"], str(status))
    if key not in _RESPONSES:
        responses = op["responses"]
        assert str(status) in responses, f"{op['operationId']} answered {status}, which the spec does not document"
        _RESPONSES[key] = resolved(responses[str(status)])
    return _RESPONSES[key]


def assert_documented(op: dict, answer: httpx.Response) -> None:
    response = documented_response(op, answer.status_code)
    for name, header in response.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in answer.headers, f"{op['operationId']} {answer.status_code} lacks {name}"
    content = response.get("content", {})
    if content:
        media_type = answer.headers["content-type"].split(";")[0]
        assert media_type in content, f"{op['operationId']} {answer.status_code} answered {media_type}"
        compiled(content[media_type]["schema"])(answer.json())


def operation(operation_id: str) -> tuple[str, str, dict]:
    """(method, path template, operation object) of an operationId."""
    return next((method, path, op) for path, item in SPEC["paths"].items() for method, op in item.items()
                if isinstance(op, dict) and op.get("operationId") == operation_id)
