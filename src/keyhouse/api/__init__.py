"""One module per family; one function per operationId, named for it (see keyhouse.app._handlers)."""

from __future__ import annotations

from datetime import datetime


def iso_z(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second, as the billing and workspace APIs write it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_offset(moment: datetime) -> str:
    """RFC 3339 in UTC with `+00:00`, to the second, as the cloud API writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")
