"""The ceiling: Connexion serving keyhouse's contract with keyhouse's own work taken out.

The same spec and the same Connexion options as `keyhouse serve` (`keyhouse.app.API_OPTIONS`: strict
request validation, response validation, the compiled validators, the JSON encoder), the same uvicorn;
but no keyhouse middleware, and the security functions and the two measured handlers replay keyhouse's
own answers from memory (the file `benchmarks/run.py` records, as for the static server). What it
serves per second is the most keyhouse could serve if its own code cost nothing: the framework's share
of a request, measured rather than read from a profile.

    KEYHOUSE_BENCH_STATIC=answers.json uvicorn benchmarks.ceiling:app

With KEYHOUSE_BENCH_CEILING=fixed it is served by Connexion with the per-request waste removed as keyhouse
removes it (keyhouse.framework: handlers decorated once, security signatures asked once, Swagger UI only on
its own paths): the ceiling keyhouse itself runs under.
"""

from __future__ import annotations

import copy
import json
import os

from connexion import AsyncApp
from connexion.resolver import Resolver

from keyhouse import spec as contract
from keyhouse.app import API_OPTIONS
from keyhouse.framework import SECURITY_MAP, OnceAsyncApp, stack

with open(os.environ["KEYHOUSE_BENCH_STATIC"]) as f:
    _answers = json.load(f)
_KEY = _answers["key"]
_TOKEN_INFO = {"sub": "bench"}
_HEADERS = {"X-Request-Id": "bench"}


async def authenticate(credential: str, request=None):
    """Every scheme's security function: the one admin key of the answers file, in any scheme's form."""
    return _TOKEN_INFO if credential.removeprefix("ApiKey ") == _KEY else None


async def get_api_key_collection(**_params):
    return _answers["list"]["body"], 200, {**_HEADERS, **_answers["list"]["headers"]}


async def verify_key(body: dict, **_params):
    known = _answers["verify"]
    answer = known["body"] if body["key"] == known["key"] else {"valid": False, "code": "NOT_FOUND"}
    return answer, 200, _HEADERS


_HANDLERS = {"getApiKeyCollection": get_api_key_collection, "verifyKey": verify_key}


def _contract() -> dict:
    spec = copy.deepcopy(contract.document())
    for scheme in spec["components"]["securitySchemes"].values():
        for name in ("x-apikeyInfoFunc", "x-bearerInfoFunc"):
            if name in scheme:
                scheme[name] = "benchmarks.ceiling.authenticate"
    return spec


async def _unmeasured(**_params):
    raise NotImplementedError  # only the two measured operations are served


if os.environ.get("KEYHOUSE_BENCH_CEILING") == "fixed":
    app = OnceAsyncApp(__name__, middlewares=stack(), security_map=SECURITY_MAP)
else:
    app = AsyncApp(__name__)
app.add_api(_contract(), resolver=Resolver(function_resolver=lambda op: _HANDLERS.get(op, _unmeasured)), **API_OPTIONS)
