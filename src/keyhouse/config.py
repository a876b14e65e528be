"""Settings, read once from the environment (the CLI's flags set the same variables)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///keyhouse.db"
DEFAULT_SECRET_FILE = ".keyhouse-secret"


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The pepper of every key hash. Losing it invalidates every key; leaking it together with the
    # database lets an attacker test guesses offline, so it never lives in the database.
    secret: bytes
    max_body_bytes: int = 64 * 1024
    rate_limit: str = "100/second"  # per key (the `limits` notation: "100/second", "5000/hour", ...)
    organization_rate_limit: str = "1000/second"
    # Verifications of a key that has no verify limit of its own (`POST /keys/verify`): none unless set.
    verified_key_rate_limit: str | None = None
    redis_url: str | None = None  # shares rate limits between workers; in memory without it
    # Refused credentials per client address: guessing keys costs lookups, so a client that keeps
    # presenting bad ones is stopped (429) before the database.
    refused_credential_limit: str = "100/minute"
    # Secrets retired by a rotation: keys hashed under them still authenticate, and are re-hashed under
    # `secret` on first use; tokens signed with them stay valid until they expire.
    previous_secrets: tuple[bytes, ...] = ()
    # How far back the change feed serves (seconds): a cursor older than that answers 410.
    change_feed_retention: int = 3600
    # How long a console session lasts after signing in (seconds), whatever is done in it.
    console_session_seconds: int = 8 * 3600

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("KEYHOUSE_DATABASE_URL", DEFAULT_DATABASE_URL),
            secret=_load_secret(),
            max_body_bytes=int(os.environ.get("KEYHOUSE_MAX_BODY_BYTES", 64 * 1024)),
            rate_limit=os.environ.get("KEYHOUSE_RATE_LIMIT", "100/second"),
            organization_rate_limit=os.environ.get("KEYHOUSE_ORGANIZATION_RATE_LIMIT", "1000/second"),
            verified_key_rate_limit=os.environ.get("KEYHOUSE_VERIFIED_KEY_RATE_LIMIT") or None,
            redis_url=os.environ.get("KEYHOUSE_REDIS_URL") or None,
            refused_credential_limit=os.environ.get("KEYHOUSE_REFUSED_CREDENTIAL_LIMIT", "100/minute"),
            previous_secrets=tuple(v.encode() for v in os.environ.get("KEYHOUSE_PREVIOUS_SECRET", "").split(",") if v),
            change_feed_retention=int(os.environ.get("KEYHOUSE_CHANGE_FEED_RETENTION", 3600)),
            console_session_seconds=int(os.environ.get("KEYHOUSE_CONSOLE_SESSION_SECONDS", 8 * 3600)),
        )


def _load_secret() -> bytes:
    """KEYHOUSE_SECRET if set; otherwise the secret file, made on first use (mode 0600)."""
    value = os.environ.get("KEYHOUSE_SECRET")
    if value:
        return value.encode()
    path = Path(os.environ.get("KEYHOUSE_SECRET_FILE", DEFAULT_SECRET_FILE))
    if not path.exists():
        # O_EXCL: two processes starting together must not write two different secrets.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


# Every variable keyhouse reads, for `keyhouse --help` and the README (a test holds all three together).
ENVIRONMENT = [
    ("KEYHOUSE_DATABASE_URL", "sqlite:///keyhouse.db", "SQLAlchemy URL of the database (PostgreSQL: "
                                                        "postgresql+psycopg://user@host/db)"),
    ("KEYHOUSE_SECRET", "", "the server secret keys are hashed under and tokens signed with"),
    ("KEYHOUSE_PREVIOUS_SECRET", "", "secrets retired by a rotation, comma-separated: their keys still work and "
                                     "are re-hashed under the current secret on first use"),
    ("KEYHOUSE_SECRET_FILE", ".keyhouse-secret", "where the secret is read from when KEYHOUSE_SECRET is unset "
                                                 "(made, mode 0600, on first use)"),
    ("KEYHOUSE_MAX_BODY_BYTES", "65536", "largest request body accepted (413 above it)"),
    ("KEYHOUSE_RATE_LIMIT", "100/second", "requests per key"),
    ("KEYHOUSE_ORGANIZATION_RATE_LIMIT", "1000/second", "requests per organization, all its keys together"),
    ("KEYHOUSE_VERIFIED_KEY_RATE_LIMIT", "", "verifications per verified key without a limit of its own "
                                             "(POST /keys/verify; none unless set)"),
    ("KEYHOUSE_REFUSED_CREDENTIAL_LIMIT", "100/minute", "refused credentials per client address before 429"),
    ("KEYHOUSE_REDIS_URL", "", "Redis for rate limits shared by every worker and server (redis://host:6379)"),
    ("KEYHOUSE_CHANGE_FEED_RETENTION", "3600", "seconds of changes GET /keys/changes serves (410 for older cursors)"),
    ("KEYHOUSE_CONSOLE_SESSION_SECONDS", "28800", "how long a console session lasts after signing in"),
    ("KEYHOUSE_WORKERS", "1", "worker processes of `keyhouse serve` (--workers)"),
    ("KEYHOUSE_FORWARDED_ALLOW_IPS", "", "proxies whose X-Forwarded-For is trusted (--forwarded-allow-ips)"),
    ("KEYHOUSE_LOG_LEVEL", "info", "lowest level of the JSON log lines (--log-level)"),
    ("PROMETHEUS_MULTIPROC_DIR", "a fresh temporary directory when --workers > 1",
     "where the workers' metrics are kept for /metrics"),
]


def environment_help() -> str:
    width = max(len(name) for name, _, _ in ENVIRONMENT)
    lines = ["environment variables:"]
    for name, default, meaning in ENVIRONMENT:
        lines.append(f"  {name:<{width}}  {meaning}" + (f" (default: {default})" if default else ""))
    return "\n".join(lines)

