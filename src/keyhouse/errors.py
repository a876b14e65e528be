"""One error type, three envelopes.

Handlers, validators and the security layer raise :class:`ApiError` with a *kind*; nothing else decides
how an error looks. The family whose path was called decides the envelope (cloud, billing or
workspace) and, for validation errors, the status: the billing and workspace APIs answer 422 for a
body that fails its schema, the cloud API 400. The statuses, codes and types written here are the ones
``openapi/keyhouse.yaml`` documents for each family; response validation and the Schemathesis run hold
the two together.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Sequence

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionResponse

log = logging.getLogger("keyhouse.errors")

BASE_PATH = "/api/v1"
JSON = "application/json"

# kind -> status. "invalid_body" is the one kind whose status depends on the family.
STATUS = {
    "malformed_request": 400,
    "invalid_parameter": 400,
    "invalid_body": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}

# The workspace family's stable machine-readable `type`, by kind.
WORKSPACE_TYPE = {
    "malformed_request": "invalid_request",
    "invalid_parameter": "validation_error",
    "invalid_body": "validation_error",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "conflict": "already_exists",
    "payload_too_large": "payload_too_large",
    "unsupported_media_type": "unsupported_media_type",
    "rate_limited": "rate_limited",
    "internal": "internal_error",
    "unavailable": "service_unavailable",
}

# The cloud family's default code, by kind; "{area}" is api_keys or traffic_filter. A raiser may
# name a more precise code (api_keys.user_not_found, traffic_filter.not_found, ...).
CLOUD_CODE = {
    "malformed_request": "root.malformed_request",
    "invalid_parameter": "{area}.invalid_input",
    "invalid_body": "{area}.invalid_input",
    "unauthorized": "root.unauthorized",
    "forbidden": "root.forbidden",
    "not_found": "root.not_found",
    "method_not_allowed": "root.method_not_allowed",
    "conflict": "{area}.conflict",
    "payload_too_large": "root.payload_too_large",
    "unsupported_media_type": "root.unsupported_media_type",
    "rate_limited": "root.rate_limited",
    "internal": "root.internal_server_error",
    "unavailable": "root.service_unavailable",
}
CLOUD_INTERNAL_BY_AREA = {"traffic_filter": "traffic_filter.request_execution_failed"}


@dataclass(frozen=True)
class FieldError:
    path: tuple[str, ...]  # e.g. ("rules", "0", "source"); () for the whole body
    message: str
    type: str = "invalid"  # the JSON Schema keyword that failed, or a short word of ours


@dataclass
class ApiError(Exception):
    kind: str
    detail: str
    code: str | None = None  # cloud code, when more precise than the kind's default
    fields: Sequence[FieldError] = ()
    location: str = "body"  # body | query | path | header: where `fields` point
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def status_code(self) -> int:
        # Read by Connexion when several security schemes fail, to pick the most specific one.
        return STATUS[self.kind]


def family_of(path: str) -> tuple[str, str]:
    """(family, cloud area) of a request path; unknown paths get problem details, like billing."""
    rest = path[len(BASE_PATH):] if path.startswith(BASE_PATH) else path
    if rest.startswith("/deployments"):
        return "cloud", "traffic_filter"
    if rest.startswith("/users"):
        return "cloud", "api_keys"
    if rest == "/user" or rest.startswith("/user/"):
        return "workspace", ""
    return "billing", ""


def render(error: ApiError, path: str) -> ConnexionResponse:
    family, area = family_of(path)
    status = STATUS[error.kind]
    headers = dict(error.headers)
    if family == "cloud":
        if error.kind == "invalid_body":
            status = 400
        code = error.code
        if code is None:
            code = CLOUD_CODE[error.kind].format(area=area)
            if error.kind == "internal":
                code = CLOUD_INTERNAL_BY_AREA.get(area, code)
        item: dict = {"code": code, "message": error.detail}
        if error.fields:
            item["fields"] = [".".join(f.path) for f in error.fields]
        body: dict = {"errors": [item]}
        headers["x-cloud-error-codes"] = code
    elif family == "workspace":
        body = {"code": status, "detail": error.detail, "type": WORKSPACE_TYPE[error.kind]}
        if error.fields:
            body["errors"] = [
                {"loc": [error.location, *f.path], "msg": f.message, "type": f.type} for f in error.fields
            ]
    else:
        body = {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": error.detail,
        }
        if error.fields:
            body["invalidFields"] = [
                {"field": ".".join(f.path) or error.location, "message": f.message} for f in error.fields
            ]
    return ConnexionResponse(status_code=status, mimetype=JSON, body=json.dumps(body), headers=headers)


# Connexion's own problems, by status, as kinds.
_PROBLEM_KIND = {
    400: "malformed_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def from_problem(problem: ProblemException) -> ApiError:
    """Connexion raises problem+json for what it refuses itself; we re-dress it."""
    status = problem.status_code
    detail = str(problem.detail or problem.title or HTTPStatus(status).phrase)
    kind = _PROBLEM_KIND.get(status)
    if kind is None:
        log.error("unexpected problem from the framework: %r", problem)
        return ApiError("internal", "An unexpected error occurred.")
    if status == 401:
        detail = "The supplied authentication is invalid."
    return ApiError(kind, detail)


def allowed_methods(spec_paths: dict, path: str) -> list[str]:
    """The methods the spec declares for the path template that matches `path` (for `Allow`)."""
    rest = path[len(BASE_PATH):] if path.startswith(BASE_PATH) else path
    rest = rest.rstrip("/") or "/"
    for template, methods in spec_paths.items():
        # The first template that matches is the resource: the spec lists `/user/api-keys/self` before
        # `/user/api-keys/{id}`, as the router tries them.
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, rest):
            declared = {m.upper() for m in methods if m in _HTTP_METHODS}
            if "GET" in declared:
                declared.add("HEAD")  # the router answers HEAD wherever it answers GET
            return sorted(declared)
    return []


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

