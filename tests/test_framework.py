"""keyhouse.framework: Connexion's per-request waste removed, and a loud failure when an upgrade of
Connexion changes what it overrides."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

import connexion.decorators.parameter
import connexion.security
from connexion.apps.asynchronous import AsyncApi, AsyncApp, AsyncASGIApp, AsyncOperation
from connexion.decorators.main import ASGIDecorator, BaseDecorator
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.security import AbstractSecurityHandler

from tests.helpers import API

# What keyhouse.framework overrides or leans on, as Connexion 3.3.0 has it. When an upgrade changes one,
# re-read keyhouse.framework against the new code, then update its hash here.
OVERRIDDEN = {
    "AsyncOperation.fn": (AsyncOperation.fn.fget, "9cad70e32840c9ec"),
    "AsyncOperation.from_operation": (AsyncOperation.from_operation, "899345123cb08ba0"),
    "AsyncApi.make_operation": (AsyncApi.make_operation, "555eaf3ca12397b1"),
    "AsyncApp.__init__": (AsyncApp.__init__, "624f5070177b0d80"),
    "AsyncASGIApp": (AsyncASGIApp, "6f4dd967cd072817"),
    "BaseDecorator.uri_parser": (BaseDecorator.uri_parser.fget, "140072be21d36da0"),
    "BaseDecorator.decorate": (BaseDecorator.decorate, "ecc6529a18274fda"),
    "ASGIDecorator.__call__": (ASGIDecorator.__call__, "7397ac94437e4d7e"),
    "AbstractSecurityHandler._accepts_kwarg": (AbstractSecurityHandler._accepts_kwarg, "f04f41d0fb5eea37"),
    "AbstractSecurityHandler._generic_check": (AbstractSecurityHandler._generic_check, "28e23fb07ef65fb6"),
    "SwaggerUIMiddleware": (SwaggerUIMiddleware, "3aa8fe6b22f495c4"),
    "ASGIDecorator._parameter_decorator_cls": (ASGIDecorator._parameter_decorator_cls.fget, "9d959264f117dae9"),
    # The names' conversion is remembered: it must stay a function of the name alone.
    "BaseParameterDecorator.__init__": (connexion.decorators.parameter.BaseParameterDecorator.__init__,
                                        "a2ab5462f60aa23a"),
    "pythonic": (connexion.decorators.parameter.pythonic, "70c5c689dec99744"),
    "sanitized": (connexion.decorators.parameter.sanitized, "8ee876388896618b"),
    "snake_and_shadow": (connexion.decorators.parameter.snake_and_shadow, "f94ac0bf8868ee94"),
    "ConnexionMiddleware._build_middleware_stack": (ConnexionMiddleware._build_middleware_stack, "87c580cd81e68e94"),
}


def test_connexion_is_the_version_keyhouse_framework_was_written_for():
    assert version("connexion").startswith("3.3."), version("connexion")
    changed = [name for name, (code, known) in OVERRIDDEN.items()
               if hashlib.sha256(inspect.getsource(code).encode()).hexdigest()[:16] != known]
    assert not changed, f"Connexion changed what keyhouse.framework overrides: {changed}; re-read it"


class Counting:
    def __init__(self, monkeypatch, module, name: str):
        self.calls = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def test_handlers_are_decorated_once_and_signatures_asked_once(client, world, monkeypatch):
    headers, url = world.acme_admin.billing, f"{API}/api-keys?limit=5&offset=0&sort=id"
    assert client.get(url, headers=headers).status_code == 200  # first: decorated now, if not before
    parameters = Counting(monkeypatch, connexion.decorators.parameter, "inspect_function_arguments")
    security = Counting(monkeypatch, connexion.security, "inspect_function_arguments")
    names = Counting(monkeypatch, connexion.decorators.parameter.inflection, "underscore")
    for _ in range(10):
        assert client.get(url, headers=headers).status_code == 200
    # Connexion 3.3 as it comes: one signature per request to decorate, two for the security function,
    # a conversion per parameter name.
    assert (parameters.calls, security.calls, names.calls) == (0, 0, 0)


def test_swagger_ui_is_reached_by_its_own_paths_only(client, world, monkeypatch):
    routed = Counting(monkeypatch, SwaggerUIMiddleware, "__call__")
    assert client.get(f"{API}/api-keys", headers=world.acme_admin.billing).status_code == 200
    assert client.get(f"{API}/nowhere", headers=world.acme_admin.billing).status_code == 404
    assert routed.calls == 0
    assert client.get(f"{API}/openapi.json").json()["info"]["title"] == "keyhouse"
    assert client.get(f"{API}/ui/").status_code == 200
    assert routed.calls == 2
