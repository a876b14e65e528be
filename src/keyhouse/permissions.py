"""The permission model, read from the spec.

A permission is an operationId, or "*" for all of them. Billing ACLs and workspace `allowed_scopes` are
two views of the same list. An operation writes unless it is a GET or the spec marks it
`x-keyhouse-safe` (verification, token exchange). Publishable keys (meant to ship in front-end code) hold
only the operations the spec marks `x-keyhouse-publishable`, never a writing one, and nothing by default;
operations marked `x-keyhouse-admins-only` are for the organization's admins whatever a key holds; and a
key never holds more than the key that made it. Each mark is on the operation in the contract, so a new
operation is closed to publishable keys and open to members unless the contract says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import spec as contract

ALL = "*"


@dataclass(frozen=True)
class Policy:
    operations: frozenset[str]
    writes: frozenset[str]
    publishable: frozenset[str] = frozenset()  # what a publishable key may hold (none of them writes)
    admins_only: frozenset[str] = frozenset()

    @classmethod
    def from_spec(cls, spec: dict) -> Policy:
        operations, writes, publishable, admins_only = set(), set(), set(), set()
        for method, _, operation in contract.operations(spec):
            # An operation open to all (`security: []`, the operators' health checks) is no permission.
            if operation.get("security") != []:
                name = operation["operationId"]
                operations.add(name)
                if method != "get" and not operation.get("x-keyhouse-safe"):
                    writes.add(name)
                if operation.get("x-keyhouse-publishable"):
                    publishable.add(name)
                if operation.get("x-keyhouse-admins-only"):
                    admins_only.add(name)
        return cls(frozenset(operations), frozenset(writes), frozenset(publishable - writes), frozenset(admins_only))

    def allows(self, held: list[str], key_type: str, operation_id: str) -> bool:
        if key_type == "publishable" and operation_id not in self.publishable:
            return False
        return ALL in held or operation_id in held

    def admits(self, held: list[str], key_type: str, role: str, operation_id: str) -> bool:
        """Whether a key may call the operation now: it holds it, and it is an admin's where it must be."""
        return self.allows(held, key_type, operation_id) and (role == "admin" or operation_id not in self.admins_only)

    def expand(self, held: list[str]) -> set[str]:
        return set(self.operations) if ALL in held else set(held)

    def grantable(self, creator: list[str], creator_type: str, requested: list[str], key_type: str) -> str | None:
        """Why `requested` may not be given to a new key of `key_type`, or None when it may."""
        wanted = self.expand(requested)
        if key_type == "publishable" and ALL not in requested and (closed := wanted - self.publishable):
            if closed & self.writes:
                return "publishable keys cannot hold writing operations: " + ", ".join(sorted(closed & self.writes))
            return (f"publishable keys may hold only {', '.join(sorted(self.publishable)) or 'none'} of keyhouse's "
                    "operations, not: " + ", ".join(sorted(closed)))
        usable = {op for op in self.expand(creator) if self.allows(creator, creator_type, op)}
        beyond = wanted - usable
        if ALL in requested and (ALL not in creator or creator_type == "publishable"):
            return "a key cannot grant more than its creator holds: *"
        if beyond and ALL not in requested:
            return "a key cannot grant more than its creator holds: " + ", ".join(sorted(beyond))
        return None
