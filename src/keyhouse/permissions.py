"""The permission model, read from the spec.

A permission is an operationId, or "*" for all of them. Billing ACLs and workspace `allowed_scopes` are
two views of the same list. An operation writes unless it is a GET or the spec marks it
`x-keyhouse-safe` (verification, token exchange); publishable keys never hold a writing operation, and
a key never holds more than the key that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL = "*"


@dataclass(frozen=True)
class Policy:
    operations: frozenset[str]
    writes: frozenset[str]

    @classmethod
    def from_spec(cls, spec: dict) -> Policy:
        operations, writes = set(), set()
        for item in spec["paths"].values():
            for method, operation in item.items():
                # An operation open to all (`security: []`, the operators' health checks) is no permission.
                if isinstance(operation, dict) and "operationId" in operation and operation.get("security") != []:
                    operations.add(operation["operationId"])
                    if method != "get" and not operation.get("x-keyhouse-safe"):
                        writes.add(operation["operationId"])
        return cls(frozenset(operations), frozenset(writes))

    def allows(self, held: list[str], key_type: str, operation_id: str) -> bool:
        if key_type == "publishable" and operation_id in self.writes:
            return False
        return ALL in held or operation_id in held

    def expand(self, held: list[str]) -> set[str]:
        return set(self.operations) if ALL in held else set(held)

    def grantable(self, creator: list[str], creator_type: str, requested: list[str], key_type: str) -> str | None:
        """Why `requested` may not be given to a new key of `key_type`, or None when it may."""
        wanted = self.expand(requested)
        if key_type == "publishable" and wanted & self.writes and ALL not in requested:
            return "publishable keys cannot hold writing operations: " + ", ".join(sorted(wanted & self.writes))
        usable = {op for op in self.expand(creator) if self.allows(creator, creator_type, op)}
        beyond = wanted - usable
        if ALL in requested and (ALL not in creator or creator_type == "publishable"):
            return "a key cannot grant more than its creator holds: *"
        if beyond and ALL not in requested:
            return "a key cannot grant more than its creator holds: " + ", ".join(sorted(beyond))
        return None
