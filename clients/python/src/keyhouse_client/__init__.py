"""keyhouse's client: verify the API keys presented to a platform, from a cache kept true by keyhouse's
change feed, and middleware that guards an ASGI or WSGI application with them.

    from keyhouse_client import AsyncKeyhouse, KeyhouseMiddleware
    keyhouse = AsyncKeyhouse("http://keyhouse:8080/api/v1", GATEWAY_KEY)
    app.add_middleware(KeyhouseMiddleware, keyhouse=keyhouse, openapi="openapi.yaml", api="documents")
"""

from .cache import VerdictCache
from .client import AsyncKeyhouse, Keyhouse, KeyhouseUnavailable
from .middleware import KeyhouseMiddleware, KeyhouseWSGIMiddleware, Operations, Refusal
from .verdict import Verdict

__all__ = ["AsyncKeyhouse", "Keyhouse", "KeyhouseMiddleware", "KeyhouseUnavailable", "KeyhouseWSGIMiddleware",
           "Operations", "Refusal", "Verdict", "VerdictCache"]
