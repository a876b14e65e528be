"""One error type, three envelopes, and all the dressing.

Handlers, validators and the security layer raise :class:`ApiError` with a *kind*; nothing else decides
how an error looks. The family of the path called decides the envelope (cloud, billing or workspace;
keyhouse's own operations answer problem details, as billing does) and, for validation errors, the
status: the billing and workspace APIs answer 422 for a body that fails its schema, the cloud API 400.
Which family a path belongs to is read from the spec (:class:`ErrorEnvelopes`): the `x-keyhouse-family` of the
tags of the operations under it. The statuses, codes and types written here are the ones
``openapi/keyhouse.yaml`` documents for each family; response validation, tests/test_edges.py and the
Schemathesis run hold the two together.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException

from . import spec
from .store.session import database_unreachable, retryable

log = logging.getLogger("keyhouse.errors")

JSON = "application/json"
RETRY_AFTER_SECONDS = 5  # after a 503 for an unreachable database
CONFLICT_RETRY_AFTER_SECONDS = 1  # after a 503 for write conflicts that outlasted their retries

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
    "gone": 410,  # keyhouse's own family only: a change-feed cursor it no longer serves
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


def render(error: ApiError, family: str, area: str) -> ConnexionResponse:
    """The error in its family's envelope."""
    status = STATUS[error.kind]
    headers = dict(error.headers)
    body: dict
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
        body = {"errors": [item]}
        headers["x-cloud-error-codes"] = code
    elif family == "workspace":
        body = {"code": status, "detail": error.detail, "type": WORKSPACE_TYPE[error.kind]}
        if error.fields:
            body["errors"] = [
                {"loc": [error.location, *f.path], "msg": f.message, "type": f.type} for f in error.fields
            ]
    else:  # billing, and keyhouse's own operations
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


class ErrorEnvelopes:
    """Every error keyhouse answers, dressed in the envelope of the family whose path was called.

    Read from the spec: the base path (`servers`), the family of each first path segment (the
    `x-keyhouse-family` of the tags of the operations under it; a path under no operation gets problem
    details), and the methods each resource declares (for `Allow`: Connexion's is incomplete).
    """

    def __init__(self, document: dict):
        self.base = spec.base_path(document)
        self._families: dict[str, tuple[str, str]] = {}
        for _, template, operation in spec.operations(document):
            segment = template.split("/")[1]
            found = spec.family(document, operation)
            if self._families.setdefault(segment, found) != found:
                raise ValueError(f"operations under /{segment} belong to two families: the envelope of an "
                                 f"unknown path below it could not be told")
        # The first template that matches is the resource: `/user/api-keys/self` before `/user/api-keys/{id}`,
        # as the router tries them.
        self._resources = [(re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"),
                            _allowed(item)) for template, item in document["paths"].items()]

    def _below_base(self, path: str) -> str:
        return path[len(self.base):] if path.startswith(self.base) else path

    def family_of(self, path: str) -> tuple[str, str]:
        """(family, cloud area) of a request path."""
        rest = self._below_base(path)
        return self._families.get(rest.split("/")[1] if rest.startswith("/") else "", ("keyhouse", ""))

    def allowed_methods(self, path: str) -> list[str]:
        """The methods the spec declares for the resource at `path` (for `Allow`)."""
        rest = self._below_base(path).rstrip("/") or "/"
        return next((methods for pattern, methods in self._resources if pattern.match(rest)), [])

    def dress(self, request: ConnexionRequest, error: ApiError) -> ConnexionResponse:
        if error.kind == "method_not_allowed":
            error.headers["Allow"] = ", ".join(self.allowed_methods(request.url.path))
        return render(error, *self.family_of(request.url.path))

    def handlers(self) -> list[tuple[type[Exception], Callable]]:
        """(exception class, handler) for Connexion's `add_error_handler`: ours, Connexion's own problems,
        Starlette's HTTP errors, and whatever else escaped (a documented 500, or 503 with Retry-After
        when the database is away)."""

        def on_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
            return self.dress(request, from_problem(exc))

        def on_http_exception(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
            problem = ProblemException(status=exc.status_code, detail=exc.detail, headers=exc.headers)
            return self.dress(request, from_problem(problem))

        def on_unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
            if retryable(exc):  # a conflict that outlasted its retries: the database is there, and busy
                log.warning("conflict still lost after retries on %s %s: %s", request.method, request.url.path, exc)
                return self.dress(request, ApiError("unavailable", "Too many writes conflicted; try again shortly.",
                                                    headers={"Retry-After": str(CONFLICT_RETRY_AFTER_SECONDS)}))
            if database_unreachable(exc):
                log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
                return self.dress(request, ApiError("unavailable", "The database is unreachable; try again shortly.",
                                                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            return self.dress(request, ApiError("internal", "An unexpected error occurred."))

        return [(ApiError, self.dress), (ProblemException, on_problem), (HTTPException, on_http_exception),
                (Exception, on_unexpected)]


def _allowed(item: dict) -> list[str]:
    declared = {method.upper() for method in item if method in spec.HTTP_METHODS}
    if "GET" in declared:
        declared.add("HEAD")  # the router answers HEAD wherever it answers GET
    return sorted(declared)
