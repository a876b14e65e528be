"""The contract, `openapi/keyhouse.yaml`, read once per process.

The app, the security layer, the permission model, the error envelopes and the tests all read this one
parsed document (Connexion is handed it as a dict and keeps a copy of its own). Facts that the contract
states are read from it here, never restated in Python: the base path, each operation's family, limits.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def path() -> Path:
    """The contract: shipped inside the wheel, or read from the source tree in a checkout."""
    packaged = Path(__file__).parent / "openapi" / "keyhouse.yaml"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "openapi" / "keyhouse.yaml"


@functools.cache
def document() -> dict[str, Any]:
    """The parsed contract. Shared: read it, never change it. libyaml's loader where it is built in (a
    tenth of the pure-Python loader's time for these 3,300 lines)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path().read_text(), Loader=loader)  # noqa: S506 - a safe loader, C or Python


def base_path(spec: dict) -> str:
    """Where the operations are served: the path of the first server (`/api/v1`)."""
    return spec["servers"][0]["url"].rstrip("/")


def operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(method, path template, operation object) of every operation."""
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, template, operation


def family(spec: dict, operation: dict) -> tuple[str, str]:
    """(family, cloud area) of an operation, from its tag's `x-keyhouse-family` and `x-keyhouse-area`."""
    tag = next(t for t in spec["tags"] if t["name"] == operation["tags"][0])
    return tag["x-keyhouse-family"], tag.get("x-keyhouse-area", "")


def schema(spec: dict, name: str) -> dict:
    return spec["components"]["schemas"][name]
