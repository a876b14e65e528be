"""What a request needs from its process: the settings, the store, the policy, the limiter, the recorder.

One value per app, made by create_app, and reached one way: handlers are handed it (`rt`, bound to each
handler when the app is made), and what Connexion or Starlette calls by itself (the security function,
the console) reads it from the request's ASGI scope, where RequestContext puts it. Several apps can live
in one process (the tests make one per database).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .changes import ChangeSignal
from .config import Settings
from .permissions import Policy
from .ratelimit import RateLimiter
from .recorder import Recorder
from .store.session import Store
from .webhooks import Webhooks


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    policy: Policy
    recorder: Recorder
    limiter: RateLimiter
    changes: ChangeSignal
    webhooks: Webhooks  # the sender, which also seals the endpoints' secrets (keyhouse.webhooks)
    extractors: dict = field(default_factory=dict)  # operationId -> credential readers (keyhouse.auth)
    github_keys: dict = field(default_factory=dict)  # GitHub's secret scanning keys, by id (keyhouse.leaks)


_SCOPE_KEY = "keyhouse.runtime"


def of(scope) -> Runtime:  # type: ignore[no-untyped-def]
    """The runtime of the app a request came to: put in its ASGI scope by RequestContext (set up by
    create_app), read by the security function and the console; handlers are handed it (api.HANDLERS,
    bound in create_app)."""
    return scope[_SCOPE_KEY]


def attach(scope, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    scope[_SCOPE_KEY] = runtime
