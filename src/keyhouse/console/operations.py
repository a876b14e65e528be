"""The console acts through the operations: each page calls the handler of an operationId of the spec, as
the signed-in key, exactly as a request to that operation would reach it: the key may call it now (the
verifier's whole question, through auth.admit), its parameters and body checked against the operation's
own, and its answer checked against the operation's response before the page shows it. So a page can
never do what the API would refuse, nor show what the API would not answer, and no rule of keyhouse
lives here a second time."""

from __future__ import annotations

import copy
import functools
import inspect
import typing as t

from connexion.json_schema import resolve_refs
from starlette.concurrency import run_in_threadpool

from .. import runtime, spec
from ..api import HANDLERS, handed
from ..auth import Principal, admit
from ..errors import ApiError, FieldError
from ..validation import compiled_response, parameter_error, validated


@functools.cache
def _operations() -> dict[str, dict]:
    """operationId -> its operation object, with every `$ref` resolved (read once)."""
    resolved = resolve_refs(copy.deepcopy(spec.document()))
    return {operation["operationId"]: operation for _, _, operation in spec.operations(resolved)}


def by_tag(operation_ids: set[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The operations among `operation_ids` grouped by their tag, each with its summary: [(tag,
    [(operationId, summary)])] (what the permission picker shows). keyhouse's own tags come first, then
    the three families', each in the contract's order."""
    document = spec.document()
    tags = document.get("tags", [])
    order = [t["name"] for t in tags if t.get("x-keyhouse-family") == "keyhouse"] + \
        [t["name"] for t in tags if t.get("x-keyhouse-family") != "keyhouse"]
    grouped: dict[str, list[tuple[str, str]]] = {}
    for operation_id, operation in _operations().items():
        if operation_id in operation_ids:
            tag = (operation.get("tags") or ["Other"])[0]
            grouped.setdefault(tag, []).append((operation_id, operation.get("summary", "")))
    return [(tag, sorted(grouped[tag])) for tag in sorted(grouped, key=lambda t: (order.index(t) if t in order
                                                                                 else len(order), t))]


def body_schema(operation_id: str) -> dict:
    return _operations()[operation_id]["requestBody"]["content"]["application/json"]["schema"]


def _parameter(operation_id: str, name: str) -> dict:
    return next(p for p in _operations()[operation_id].get("parameters", []) if p["name"] == name)


def max_length(operation_id: str, name: str) -> int:
    """The spec's `maxLength` of a field of the operation's body, or else of its parameter `name` (what the
    pages' inputs tell the browser)."""
    body = _operations()[operation_id].get("requestBody")
    field = body and body_schema(operation_id)["properties"].get(name)
    return (field or _parameter(operation_id, name)["schema"])["maxLength"]


def _checked_parameters(operation_id: str, given: dict[str, t.Any]) -> dict[str, t.Any]:
    """The parameters a page passes, as a request's would be checked: each against the operation's own
    parameter (400 naming it), the required ones present, no name the operation does not have."""
    declared = {param["name"]: param for param in _operations()[operation_id].get("parameters", [])}
    if unknown := set(given) - set(declared):
        raise TypeError(f"{operation_id} has no parameter {sorted(unknown)}")  # a page's bug, not a client's
    for name, param in declared.items():
        value = given.get(name)
        why = (f"Missing parameter '{name}'" if param.get("required") else None) if value is None \
            else parameter_error(param, value)
        if why is not None:
            raise ApiError("invalid_parameter", why, fields=[FieldError((name,), why, "invalid")],
                           location=param["in"])
    return {name: value for name, value in given.items() if value is not None}


def _checked_answer(operation_id: str, answer: t.Any) -> t.Any:
    """The handler's answer, checked against the operation's response for its status, as Connexion checks
    every answer of the API: one that does not conform is keyhouse's bug, a 500, never shown."""
    body, status = (answer[0], answer[1]) if isinstance(answer, tuple) else (answer, 200)
    content = _operations()[operation_id]["responses"][str(status)].get("content", {})
    if body is not None and "application/json" in content:
        if not compiled_response(content["application/json"]["schema"]).is_valid(body):
            raise ApiError("internal", f"The answer of {operation_id} does not conform to its contract.")
    return answer


class OperationCaller:
    """A signed-in person's key, calling operations."""

    def __init__(self, rt: runtime.Runtime, me: Principal):
        self.rt, self.me = rt, me

    def may(self, operation_id: str) -> bool:
        """Whether the key may call the operation (the pages show only what it may)."""
        return self.rt.policy.admits(list(self.me.permissions), self.me.key_type, self.me.role, operation_id)

    async def call(self, operation_id: str, *, body: dict | None = None, **parameters: t.Any) -> t.Any:
        """What the operation's handler answers (its body), as keyhouse.auth lets a request reach it."""
        answer = await self._answer(operation_id, body, parameters)
        return answer[0] if isinstance(answer, tuple) else answer

    async def call_paged(self, operation_id: str, **parameters: t.Any) -> tuple[list, int]:
        """A page of a paged operation, and the size of the whole collection (its `Pagination-Total`)."""
        page, _status, headers = await self._answer(operation_id, None, parameters)
        return page, int(headers["Pagination-Total"])

    async def _answer(self, operation_id: str, body: dict | None, parameters: dict) -> t.Any:
        await admit(self.rt, self.me, operation_id)
        parameters = _checked_parameters(operation_id, parameters)
        if body is not None:
            parameters["body"] = validated(body_schema(operation_id), body)
        handler = handed(self.rt, HANDLERS[operation_id])
        token_info = {"sub": self.me.user_id, "principal": self.me}
        if inspect.iscoroutinefunction(handler):
            answer = await handler(**parameters, token_info=token_info)
        else:  # as Connexion runs a plain function: off the event loop
            answer = await run_in_threadpool(handler, **parameters, token_info=token_info)
        return _checked_answer(operation_id, answer)
