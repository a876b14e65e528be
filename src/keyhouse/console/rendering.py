"""Pages from templates (Jinja2, autoescaped), with the headers every console page carries."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..store.models import utcnow
from .operations import OperationCaller, max_length

HERE = Path(__file__).parent
# The vendored htmx and its Subresource Integrity, as scripts/vendor-htmx recorded them.
VENDORED = json.loads((HERE / "static" / "VENDORED.json").read_text())

# Scripts, styles and everything else from the console's own origin only: no inline script or style runs,
# no page can be framed, and forms post nowhere else. No page is kept by a cache: they show keys, and
# the two that reveal a secret must not be found again in a browser's history or a proxy.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def ago(text: str | None, now: datetime | None = None) -> str:
    """'3 minutes ago', 'in 2 days': how far a moment (RFC 3339) is from now, in the largest unit."""
    moment = _moment(text)
    if moment is None:
        return ""
    seconds = int(((now or utcnow()) - moment).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 45:
        return "just now" if not future else "in a few seconds"
    for unit, size in (("year", 31_536_000), ("month", 2_592_000), ("day", 86_400), ("hour", 3_600),
                       ("minute", 60)):
        if seconds >= size * 0.9:
            count = max(1, round(seconds / size))
            phrase = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {phrase}" if future else f"{phrase} ago"
    return "in a minute" if future else "a minute ago"


def exact(text: str | None) -> str:
    moment = _moment(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def state(key: dict) -> str:
    """What the list says of a live key: active, expiring (within 7 days) or expired."""
    expires = _moment(key.get("expires_at"))
    if expires is None:
        return "active"
    left = (expires - utcnow()).total_seconds()
    return "expired" if left <= 0 else "expiring" if left < 7 * 86_400 else "active"


# The sections the header links to, each with the operation its page calls: a key sees only those it may call.
SECTIONS = [("Keys", "/console/keys", "listKeys"), ("Find by secret", "/console/find", "lookupKey"),
            ("Rulesets", "/console/rulesets", "getTrafficFilterRulesets"),
            ("Audit", "/console/audit", "listAuditEvents"), ("APIs", "/console/apis", "listPlatformApis"),
            ("Webhooks", "/console/webhooks", "listWebhooks")]


def sections(session) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(label, path) of the sections the signed-in key may open."""
    caller = OperationCaller(session.rt, session.me)
    return [(label, path) for label, path, operation_id in SECTIONS if caller.may(operation_id)]


def form_tokens(session) -> Markup:  # type: ignore[no-untyped-def]
    """The hidden fields every form of a signed-in page carries: the session's CSRF token, and a one-time
    token of this form (sent again, the form changes nothing: pages.signed)."""
    return Markup('<input type="hidden" name="csrf" value="{}"><input type="hidden" name="once" value="{}">').format(
        escape(session.csrf_token), secrets.token_urlsafe(16))


def changes(event: dict) -> list[tuple[str, str, str]]:
    """(field, old, new) of what an audit event changed, as people read values."""
    def shown(value: object) -> str:
        if value is None:
            return "none"
        if isinstance(value, list):
            return ", ".join(str(v) for v in value) or "none"
        return json.dumps(value) if isinstance(value, dict) else str(value)

    return [(field, shown(old), shown(new)) for field, (old, new) in (event.get("changes") or {}).items()]


templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
templates.filters.update(ago=ago, exact=exact, state=state)
templates.globals.update(htmx=VENDORED["htmx.min.js"], max_length=max_length, sections=sections,
                         form_tokens=form_tokens, changes=changes)


def render(request: Request, template: str, context: dict | None = None, *, status: int = 200,
           headers: dict | None = None) -> HTMLResponse:
    page = templates.get_template(template).render(request=request, **(context or {}))
    return HTMLResponse(page, status_code=status, headers={**HEADERS, **(headers or {})})
