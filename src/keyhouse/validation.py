"""Request and response validation with schemas compiled once.

Connexion builds a jsonschema validator for every request and response (about 1.4 ms of CPU for a
20-item list). These validators compile each schema of the spec once, with fastjsonschema, and plug in
through ``validator_map``; the map keeps Connexion's ``MediaTypeDict`` because a plain dict silently
turns JSON validation off. They also speak our error type, so that a failure names its fields in the
family's envelope instead of a problem+json string.

OpenAPI 3.0 schemas are not quite JSON Schema: ``nullable`` is translated here. The spec uses only
standard formats (date-time, ipv4, ipv6), so that every consumer of it checks the same thing.
"""

from __future__ import annotations

import logging
import typing as t

import fastjsonschema
import jsonschema_rs
import orjson
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import NonConformingResponseBody, TypeValidationError
from connexion.validators import JSONRequestBodyValidator, JSONResponseBodyValidator, ParameterValidator

from .errors import ApiError, FieldError

log = logging.getLogger("keyhouse.validation")

_NOT_KEYWORDS = {"components", "example", "examples", "discriminator", "xml", "externalDocs",
                 "deprecated", "readOnly", "writeOnly", "nullable"}


def to_json_schema(schema: t.Any) -> t.Any:
    """An OpenAPI 3.0 schema object as a draft-4 JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: t.Any = {}
    for key, value in schema.items():
        if key in _NOT_KEYWORDS:
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = to_json_schema(value)
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _draft4(schema: dict) -> dict:
    return {"$schema": "http://json-schema.org/draft-04/schema#", **to_json_schema(schema)}


_compiled: dict[tuple[int, bool], tuple[dict, t.Callable]] = {}


def compiled(schema: dict, *, fill_defaults: bool = False) -> t.Callable:
    """The compiled validator of one schema object of the loaded spec (they live as long as the app)."""
    entry = _compiled.get((id(schema), fill_defaults))
    if entry is None or entry[0] is not schema:
        entry = (schema, fastjsonschema.compile(_draft4(schema), use_default=fill_defaults))
        _compiled[(id(schema), fill_defaults)] = entry
    return entry[1]


_responses: dict[int, tuple[dict, t.Any]] = {}


def compiled_response(schema: dict) -> t.Any:
    """The jsonschema-rs validator of a response schema, built once. Responses are checked by jsonschema-rs:
    on a 20-item billing page it takes a ninth of fastjsonschema's time (benchmarks/validators.py), and a
    response needs no defaults filled in nor field errors for a client. Requests keep fastjsonschema, which
    fills in the spec's defaults and whose errors name the fields in every family's envelope."""
    entry = _responses.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, jsonschema_rs.validator_for(_draft4(schema), validate_formats=True))
        _responses[id(schema)] = entry
    return entry[1]


def parameter_error(param: dict, value: t.Any) -> str | None:
    """Why `value` is not one the (resolved) parameter takes, naming it; None when it is. Every request's
    parameters, and what the console reads off its own URLs (keyhouse.console)."""
    try:
        compiled(param.get("schema", param))(value)
    except fastjsonschema.JsonSchemaValueException as e:
        return e.message.replace(e.name, param["name"], 1) if e.name else e.message
    return None


def field_errors(error: fastjsonschema.JsonSchemaValueException) -> list[FieldError]:
    path = tuple(str(p) for p in error.path[1:])  # path[0] is fastjsonschema's "data"
    where = ".".join(path) or "body"
    message = error.message.replace(error.name, where, 1) if error.name else error.message
    if error.rule == "required" and isinstance(error.value, dict):
        missing = [name for name in error.rule_definition if name not in error.value]
        return [FieldError((*path, name), f"'{name}' is a required property", "required") for name in missing]
    if error.rule == "additionalProperties" and isinstance(error.value, dict):
        known = set((error.definition or {}).get("properties", {}))
        extra = [name for name in error.value if name not in known]
        return [FieldError((*path, name), f"'{name}' is not a field of this object", "extra") for name in extra]
    return [FieldError(path, message, error.rule or "invalid")]


class RequestBodyValidator(JSONRequestBodyValidator):
    # Defaults declared in the spec are filled in here, so handlers never restate them.
    MUTABLE_VALIDATION = True
    async def _parse(self, stream, scope):
        raw = b"".join([message async for message in stream])
        if not raw:
            return None
        if not any(name == b"content-type" and value.strip() for name, value in scope["headers"]):
            # Connexion would guess the operation's media type for a body that names none; a body
            # is read as what it says it is, or not at all.
            raise ApiError("unsupported_media_type", "The request body has no Content-Type; send it as "
                           "application/json.")
        try:
            text = raw.decode(self._encoding)
            # orjson refuses nesting deeper than 1024 levels: the json module would recurse until
            # Python's own limit and fail with a RecursionError.
            return orjson.loads(text)
        except (LookupError, UnicodeDecodeError, orjson.JSONDecodeError) as e:
            raise ApiError("malformed_request", f"The request body is not valid JSON: {e}") from None

    def _validate(self, body):
        if body is None and not self._nullable:
            raise ApiError("malformed_request", "The request body must not be empty.")
        return validated(self._schema, body)


def validated(schema: dict, body: t.Any) -> t.Any:
    """`body` checked against a request body's (resolved) schema, with the spec's defaults filled in; else
    the error naming its fields. Every request's, and the console's forms (keyhouse.console)."""
    try:
        return compiled(schema, fill_defaults=True)(body)
    except fastjsonschema.JsonSchemaValueException as e:
        fields = _discriminated_errors(schema, body) if e.rule == "oneOf" else None
        fields = fields or field_errors(e)
        raise ApiError("invalid_body", fields[0].message, fields=fields) from None


def _discriminated_errors(schema: dict, body: t.Any) -> list[FieldError] | None:
    """A failed `oneOf` says only "matches no branch". With a discriminator, the branch the client
    meant is known: validate against it alone, so that the error names the field that is wrong."""
    discriminator = schema.get("discriminator")
    if not discriminator or not isinstance(body, dict):
        return None
    name = discriminator["propertyName"]
    branches = {value: branch for branch in schema["oneOf"]
                for value in branch.get("properties", {}).get(name, {}).get("enum", [])}
    if not isinstance(body.get(name), str) or body[name] not in branches:
        allowed = ", ".join(branches)
        return [FieldError((name,), f"{name} must be one of: {allowed}", "enum")]
    try:
        compiled(branches[body[name]])(body)
    except fastjsonschema.JsonSchemaValueException as e:
        return field_errors(e)
    return None


class ResponseBodyValidator(JSONResponseBodyValidator):
    def _parse(self, stream):
        body = b"".join(stream)
        if not body:
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise NonConformingResponseBody(detail=str(e)) from None

    def _validate(self, body):
        try:
            compiled_response(self._schema).validate(body)
        except jsonschema_rs.ValidationError as e:
            # Our bug, never the client's: logged loudly, answered as a documented 500.
            log.error("response does not conform to the spec: %s (%s)", e.message, list(e.instance_path))
            raise NonConformingResponseBody(detail=e.message) from None


class ParametersValidator(ParameterValidator):
    """Connexion's parameter checks, raising our error with the parameter's name and location, and
    checking values with the same compiled validators as bodies (one regex dialect, no per-request
    jsonschema validator)."""

    def validate_parameter(self, parameter_type, value, param, param_name=None):
        if value is None:
            return f"Missing {parameter_type} parameter '{param['name']}'" if param.get("required") else None
        return parameter_error(param, value)

    def validate_request(self, request):
        if self.strict_validation:
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            if extra:
                fields = [FieldError((n,), "is not a parameter of this operation", "extra") for n in sorted(extra)]
                raise ApiError("invalid_parameter", f"Unknown query parameter(s): {', '.join(sorted(extra))}",
                               fields=fields, location="query")
        checks = (("query", self.validate_query_parameter), ("path", self.validate_path_parameter),
                  ("header", self.validate_header_parameter), ("cookie", self.validate_cookie_parameter))
        for location, check in checks:
            for param in self.parameters.get(location, []):
                try:
                    message = check(param, request)
                except TypeValidationError as e:
                    message = e.detail
                if message:
                    name = param["name"]
                    raise ApiError("invalid_parameter", f"{name}: {_first_line(message)}",
                                   fields=[FieldError((name,), _first_line(message))], location=location)


def _first_line(message: str) -> str:
    return str(message).split("\n", 1)[0]


VALIDATOR_MAP = {
    "parameter": ParametersValidator,
    "body": MediaTypeDict({"*/*json": RequestBodyValidator}),
    "response": MediaTypeDict({"*/*json": ResponseBodyValidator}),
}
