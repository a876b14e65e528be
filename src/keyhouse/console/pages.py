"""The console's pages: one function per page or form, each caller through an operation (console.operations).

A page that fails shows why in place, with the status the API would have answered. A POST that succeeds is
answered with a redirect to the page that shows its outcome (post/redirect/get), and every form carries a
one-time token: sent again, it is answered with that same page and changes nothing. A new secret (a key
created or rerolled) is shown on a page of its own, once: held sealed with the session until then
(console.sessions).
"""

from __future__ import annotations

import functools
import typing as t
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import runtime, spec
from ..errors import STATUS, ApiError
from ..store.models import utcnow
from . import charts, sessions
from .operations import OperationCaller, by_tag
from .rendering import render

PAGE_SIZE = 25
EXPIRY_PRESETS = {"never": ("never", None), "1d": ("in 1 day", timedelta(days=1)),
                  "7d": ("in 7 days", timedelta(days=7)), "30d": ("in 30 days", timedelta(days=30)),
                  "90d": ("in 90 days", timedelta(days=90)), "365d": ("in 1 year", timedelta(days=365))}
# The first is what a reroll offers first: a secret is rerolled because it leaked more often than not.
GRACE_CHOICES = {"0": "none: the old secret stops now", "3600": "1 hour", "86400": "24 hours",
                 "604800": "7 days"}
AUDIT_ACTIONS = spec.schema(spec.document(), "AuditAction")["enum"]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _key_page(key_id: str, **query: str) -> str:
    return f"/console/keys/{quote(key_id, safe='')}" + (f"?{urlencode(query)}" if query else "")


def signed_in_only(page: t.Callable) -> t.Callable:
    """A page for the signed in: others are sent to sign in. A POST must come from the console's own
    pages and carry the session's CSRF token, or it changes nothing (403); a form sent again with the same
    one-time token is answered with where it led the first time, and acted on no more."""

    @functools.wraps(page)
    async def checked(request: Request) -> Response:
        try:
            session = await sessions.current_session(request)
        except ApiError as refused:  # a live session's key, from an address it may not be used from
            return _failed(request, None, refused)
        if session is None:
            return _see_other("/console/sign-in?" + urlencode({"next": request.url.path}))
        if request.method != "POST":
            return await page(request, session)
        form = await request.form()
        if not sessions.same_origin(request) or not sessions.csrf_ok(session, form.get("csrf")):
            return render(request, "refused.html", {"session": session}, status=403)
        once = form.get("once")
        if not isinstance(once, str) or not once:
            return await page(request, session)
        if (earlier := await sessions.claim(session, once[:64])) is not None:
            return _see_other(earlier or "/console/keys")  # sent again: nothing is done twice
        response = None
        try:
            response = await page(request, session)
        finally:
            led = response.headers.get("location") if response is not None and response.status_code == 303 else None
            await sessions.settle(session, once[:64], led)
        return response

    return checked


def _failed(request: Request, session, error: ApiError, template: str = "refused.html", **context) -> Response:
    return render(request, template, {"session": session, "error": error, **context}, status=STATUS[error.kind],
                  headers=error.headers)


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


# ------------------------------------------------------------------ signing in and out

def _lifetime(request: Request) -> str:
    seconds = runtime.of(request.scope).settings.console_session_seconds
    return f"{seconds // 3600} hours" if seconds >= 7200 else f"{max(1, seconds // 60)} minutes"


async def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", {"next": _next(request.query_params.get("next")),
                                            "lifetime": _lifetime(request)})


async def sign_in(request: Request) -> Response:
    form = await request.form()
    target = _next(form.get("next"))
    if not sessions.same_origin(request):
        return render(request, "sign_in.html", {"next": target, "error": "Sign in from the console's own page.",
                                                "lifetime": _lifetime(request)}, status=403)
    response = _see_other(target)
    presented = form.get("key")
    try:
        if not isinstance(presented, str) or not presented.strip():
            raise ApiError("unauthorized", "Paste an API key to sign in.")
        await sessions.open_session(request, presented.strip(), response)
    except ApiError as refused:
        return render(request, "sign_in.html", {"next": target, "error": refused.detail,
                                                "lifetime": _lifetime(request)},
                      status=STATUS[refused.kind], headers=refused.headers)
    return response


def _next(value: object) -> str:
    """Where to go after signing in: a page of the console, never another site."""
    if isinstance(value, str) and value.startswith("/console/") and not value.startswith("/console//") \
            and "\\" not in value and value != "/console/sign-in":
        return value
    return "/console/keys"


@signed_in_only
async def sign_out(request: Request, session) -> Response:
    response = _see_other("/console/sign-in?signed_out=1")
    sessions.close_session(session, response)
    return response


# ------------------------------------------------------------------ keys

@signed_in_only
async def keys(request: Request, session) -> Response:
    caller, page = OperationCaller(session.rt, session.me), _page_number(request)
    search = request.query_params.get("q", "").strip() or None
    context: dict = {"q": search or "", "page": page, "caller": caller, "notice": request.query_params.get("notice"),
                     "query": urlencode({"q": search}) if search else "", "keys": [], "total": 0, "pages": 1}
    try:
        rows, total = await caller.call_paged("listKeys", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                                              search=search)
        # The overview: every verdict on the organization's keys (a member's: its own) these 30 days.
        overview = charts.verdicts(await caller.call("listUsage", granularity="day", limit=0)) \
            if caller.may("listUsage") and page == 1 and not search else None
    except ApiError as e:
        return _failed(request, session, e, "keys.html", **context)
    return render(request, "keys.html", {"session": session, **context, "keys": rows, "total": total,
                                         "pages": max(1, -(-total // PAGE_SIZE)), "overview": overview})


Choices = list[tuple[str, list[tuple[str, str, str]]]]  # [(heading, [(permission, label, summary)])]


async def _permission_choices(caller: OperationCaller, held: Sequence[str] = ()) -> Choices:
    """The permissions the picker offers, grouped: keyhouse's operations the signed-in key holds, by the
    contract's tags, with their summaries; each of the organization's APIs' by its own tags (for those who
    may list them); and whatever else the key being edited holds (so that saving it keeps what the picker
    could not list)."""
    policy = caller.rt.policy
    mine = {op for op in policy.expand(list(caller.me.permissions)) if op in policy.operations}
    groups: Choices = [(tag, [(op, op, summary) for op, summary in ops]) for tag, ops in by_tag(mine)]
    if caller.may("listPlatformApis"):
        for api in await caller.call("listPlatformApis"):
            names = [p["name"] if isinstance(p, dict) else p for p in api["permissions"]]
            tagged = {name[len("tag:"):]: members for name, members in api["groups"].items()
                      if name.startswith("tag:")}
            for tag, members in sorted(tagged.items()):
                groups.append((f"{api['name']} · {tag}", [(f"{api['name']}:{m}", m, "") for m in members]))
            if untagged := [n for n in names if not any(n in members for members in tagged.values())]:
                groups.append((api["name"], [(f"{api['name']}:{n}", n, "") for n in untagged]))
    offered = {value for _, items in groups for value, _, _ in items}
    if other := [p for p in held if p not in offered]:
        groups.append(("also held", [(p, p, "") for p in other]))
    return groups


@signed_in_only
async def new_key(request: Request, session) -> Response:
    caller = OperationCaller(session.rt, session.me)
    return render(request, "new_key.html", {"session": session, "form": {}, "expiry": EXPIRY_PRESETS,
                                            "choices": await _permission_choices(caller), "caller": caller})


def _lines(text: object) -> list[str] | None:
    values = [line.strip() for line in str(text or "").replace(",", "\n").splitlines() if line.strip()]
    return values or None


def _expires(preset: object) -> str | None:
    _label, delta = EXPIRY_PRESETS.get(str(preset), ("", None))
    return None if delta is None else (utcnow() + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@signed_in_only
async def create_key(request: Request, session) -> Response:
    form, caller = await request.form(), OperationCaller(session.rt, session.me)
    body: dict = {"name": str(form.get("name", "")).strip()}
    if form.get("type"):  # otherwise the spec's default
        body["type"] = str(form["type"])
    if form.get("owner_id"):
        body["owner_id"] = str(form["owner_id"]).strip()
    # The choice is explicit: everything the creator may grant (the API's default), or exactly what is
    # ticked, none included.
    if form.get("grant") != "mine":
        body["permissions"] = [str(p) for p in form.getlist("permissions")]
    if expires := _expires(form.get("expiry")):
        body["expires_at"] = expires
    if ips := _lines(form.get("allowed_ips")):
        body["allowed_ips"] = ips
    try:
        created = await caller.call("createKey", body=body)
    except ApiError as e:
        return _failed(request, session, e, "new_key.html", form=dict(form), expiry=EXPIRY_PRESETS,
                       choices=await _permission_choices(caller), picked=set(body.get("permissions", [])),
                       caller=caller)
    reveal = await sessions.hold_secret(session, created["key"], key_id=created["id"], what="created")
    return _see_other(f"{_key_page(created['id'])}/revealed/{reveal}")


@signed_in_only
async def revealed(request: Request, session) -> Response:
    """The one page a new secret is on: it is taken out of the store as it is shown."""
    caller, key_id = OperationCaller(session.rt, session.me), request.path_params["key_id"]
    taken = await sessions.take_secret(session, request.path_params["reveal_id"])
    try:
        shown = await caller.call("getKey", key_id=key_id)
    except ApiError as e:
        return _failed(request, session, e)
    if taken is None or taken[1]["key_id"] != key_id:
        return render(request, "revealed.html", {"session": session, "key": shown, "secret": None}, status=410)
    secret, held = taken
    return render(request, "revealed.html", {"session": session, "key": shown, "secret": secret,
                                             "what": held["what"], "until": held.get("until")})


@signed_in_only
async def key(request: Request, session) -> Response:
    caller, key_id = OperationCaller(session.rt, session.me), request.path_params["key_id"]
    granularity = "hour" if request.query_params.get("usage") == "hour" else "day"
    try:
        shown = await caller.call("getKey", key_id=key_id)
        trail = await caller.call("listAuditEvents", limit=10, offset=0, target_id=key_id) \
            if caller.may("listAuditEvents") else None
        used = await caller.call("getKeyUsage", key_id=key_id, granularity=granularity) \
            if caller.may("getKeyUsage") else None
        choices = await _permission_choices(caller, shown["permissions"])
    except ApiError as e:
        return _failed(request, session, e)
    return render(request, "key.html", {"session": session, "key": shown, "trail": trail, "caller": caller,
                                        "choices": choices, "expiry": EXPIRY_PRESETS, "grace": GRACE_CHOICES,
                                        "notice": request.query_params.get("notice"), "usage": used,
                                        "chart": charts.verdicts(used) if used else None})


@signed_in_only
async def update_key(request: Request, session) -> Response:
    form, caller, key_id = await request.form(), OperationCaller(session.rt, session.me), request.path_params["key_id"]
    body: dict = {"name": str(form.get("name", "")).strip(),
                  "owner_id": str(form.get("owner_id", "")).strip() or None,
                  "permissions": [str(p) for p in form.getlist("permissions")],
                  "allowed_ips": _lines(form.get("allowed_ips"))}
    if (preset := str(form.get("expiry", "keep"))) != "keep":
        body["expires_at"] = _expires(preset)
    try:
        await caller.call("updateKey", key_id=key_id, body=body)
    except ApiError as e:
        return await _key_failed(request, session, caller, key_id, e)
    return _see_other(_key_page(key_id, notice="saved"))


async def _key_failed(request: Request, session, caller: OperationCaller, key_id: str, error: ApiError) -> Response:
    """The key's page again, with the error beside the form that caused it (or alone, if the key is gone)."""
    try:
        shown = await caller.call("getKey", key_id=key_id)
        choices = await _permission_choices(caller, shown["permissions"])
    except ApiError as gone:
        return _failed(request, session, gone)
    return _failed(request, session, error, "key.html", key=shown, trail=None, caller=caller, choices=choices,
                   expiry=EXPIRY_PRESETS, grace=GRACE_CHOICES, notice=None)


@signed_in_only
async def reroll_key(request: Request, session) -> Response:
    form, caller, key_id = await request.form(), OperationCaller(session.rt, session.me), request.path_params["key_id"]
    grace = str(form.get("grace_period_seconds", "0"))
    try:
        if grace not in GRACE_CHOICES:
            raise ApiError("invalid_body", "Choose one of the grace periods offered.")
        rerolled = await caller.call("rerollKey", key_id=key_id, body={"grace_period_seconds": int(grace)})
    except ApiError as e:
        return await _key_failed(request, session, caller, key_id, e)
    reveal = await sessions.hold_secret(session, rerolled["key"], key_id=key_id, what="rerolled",
                                        until=rerolled["previous_secret_valid_until"] if grace != "0" else None)
    return _see_other(f"{_key_page(key_id)}/revealed/{reveal}")


@signed_in_only
async def confirm_revoke(request: Request, session) -> Response:
    caller, key_id = OperationCaller(session.rt, session.me), request.path_params["key_id"]
    try:
        shown = await caller.call("getKey", key_id=key_id)
    except ApiError as e:
        return _failed(request, session, e)
    return render(request, "revoke.html", {"session": session, "key": shown})


@signed_in_only
async def revoke_key(request: Request, session) -> Response:
    caller, key_id = OperationCaller(session.rt, session.me), request.path_params["key_id"]
    try:
        await caller.call("revokeKey", key_id=key_id)
    except ApiError as e:
        return _failed(request, session, e)
    return _see_other("/console/keys?notice=revoked")


@signed_in_only
async def find_form(request: Request, session) -> Response:
    return render(request, "find.html", {"session": session})


@signed_in_only
async def find_key(request: Request, session) -> Response:
    """A key found by its secret (one that leaked): the secret is in this POST's body only, never in a URL."""
    form, caller = await request.form(), OperationCaller(session.rt, session.me)
    try:
        found = await caller.call("lookupKey", body={"key": str(form.get("key", ""))})
    except ApiError as e:
        return _failed(request, session, e, "find.html")
    return _see_other(_key_page(found["id"], notice="found"))


# ------------------------------------------------------------------ rulesets, the trail, APIs

@signed_in_only
async def rulesets(request: Request, session) -> Response:
    caller = OperationCaller(session.rt, session.me)
    try:
        found = await caller.call("getTrafficFilterRulesets", include_associations=True)
    except ApiError as e:
        return _failed(request, session, e, "rulesets.html", rulesets=[])
    return render(request, "rulesets.html", {"session": session, "rulesets": found["rulesets"]})


@signed_in_only
async def audit(request: Request, session) -> Response:
    caller, page = OperationCaller(session.rt, session.me), _page_number(request)
    actions = [a for a in request.query_params.getlist("action") if a in AUDIT_ACTIONS] or None
    target = request.query_params.get("target_id", "").strip() or None
    query = [("action", a) for a in actions or []] + ([("target_id", target)] if target else [])
    context = {"page": page, "actions": AUDIT_ACTIONS, "picked": set(actions or []), "target_id": target or "",
               "query": urlencode(query), "events": [], "total": 0, "pages": 1}
    try:
        events, total = await caller.call_paged("listAuditEvents", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                                                action=actions, target_id=target)
    except ApiError as e:
        return _failed(request, session, e, "audit.html", **context)
    return render(request, "audit.html", {"session": session, **context, "events": events, "total": total,
                                          "pages": max(1, -(-total // PAGE_SIZE))})


@signed_in_only
async def apis(request: Request, session) -> Response:
    caller = OperationCaller(session.rt, session.me)
    try:
        declared = await caller.call("listPlatformApis")
    except ApiError as e:
        return _failed(request, session, e, "apis.html", apis=[])
    return render(request, "apis.html", {"session": session, "apis": declared})


# ------------------------------------------------------------------ webhooks

@signed_in_only
async def webhooks(request: Request, session) -> Response:
    """The organization's endpoints, each with its latest deliveries and how their tries went."""
    caller = OperationCaller(session.rt, session.me)
    try:
        endpoints = await caller.call("listWebhooks")
        for endpoint in endpoints:
            endpoint["deliveries"], endpoint["delivered_total"] = await caller.call_paged(
                "listWebhookDeliveries", webhook_id=endpoint["id"], limit=10, offset=0)
    except ApiError as e:
        return _failed(request, session, e, "webhooks.html", endpoints=[], caller=caller)
    return render(request, "webhooks.html", {"session": session, "endpoints": endpoints, "caller": caller,
                                             "notice": request.query_params.get("notice")})


@signed_in_only
async def replay_delivery(request: Request, session) -> Response:
    caller = OperationCaller(session.rt, session.me)
    delivery = request.path_params["delivery_id"]
    try:
        await caller.call("replayWebhookDelivery", webhook_id=request.path_params["webhook_id"],
                          delivery_id=int(delivery) if delivery.isdigit() and len(delivery) < 19 else delivery)
    except ApiError as e:
        return _failed(request, session, e, "webhooks.html", endpoints=[], caller=caller)
    return _see_other("/console/webhooks?notice=replayed")
