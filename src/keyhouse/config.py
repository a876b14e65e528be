"""Settings, each declared once: its field here is its environment variable (KEYHOUSE_ and its name, unless
it says otherwise), its default and its meaning. pydantic-settings reads and checks them; `keyhouse --help`
and the README's table are made from these declarations (a test holds the README to them).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import keys

DEFAULT_DATABASE_URL = "sqlite:///keyhouse.db"
DEFAULT_SECRET_FILE = ".keyhouse-secret"


class Settings(BaseSettings):
    """What a keyhouse process is configured with (`Settings()` reads the environment; a test passes its own)."""

    model_config = SettingsConfigDict(env_prefix="KEYHOUSE_", frozen=True, extra="forbid", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the database (PostgreSQL: postgresql+psycopg://user@host/db)")
    # The pepper of every key hash. Losing it invalidates every key; leaking it together with the database
    # lets an attacker test guesses offline, so it never lives in the database.
    secret: bytes = Field(
        default=b"", repr=False, description="the server secret keys are hashed under and tokens signed with")
    secret_file: str = Field(
        default=DEFAULT_SECRET_FILE,
        description="where the secret is read from when KEYHOUSE_SECRET is unset (made, mode 0600, on first use)")
    # Secrets retired by a rotation: keys hashed under them still authenticate, and are re-hashed under
    # `secret` on first use; tokens signed with them stay valid until they expire.
    previous_secrets: Annotated[tuple[bytes, ...], NoDecode] = Field(
        default=(), repr=False, validation_alias=AliasChoices("previous_secrets", "KEYHOUSE_PREVIOUS_SECRET"),
        description="secrets retired by a rotation, comma-separated: their keys still work and are re-hashed "
                    "under the current secret on first use")
    # Connections to a server database, per worker process: two pools (reads on the event loop, units of work
    # in worker threads) of pool size + overflow each, and one more for the change feed's listener. Three
    # hosts x two workers at 2 x 7 + 1 is 90, under PostgreSQL's default max_connections of 100. No overflow
    # by default: a connection opened for a burst and closed after it costs PostgreSQL a process each time
    # (measured: the billing list at 16 connections served 302 req/s with 5 + 10, 472 with 7 + 0).
    listen_url: str | None = Field(
        default=None,
        description="a direct connection to PostgreSQL for the change feed's LISTEN, when the database URL goes "
                    "through PgBouncer in transaction mode (which delivers no NOTIFY); the database URL otherwise")
    database_pool_size: int = Field(
        default=7, ge=1, description="connections each of a worker's two pools keeps open to a server database "
                                     "(PostgreSQL): reads, and units of work")
    database_max_overflow: int = Field(
        default=0, ge=0, description="connections each of those pools may open beyond its size under load, and "
                                     "close after")
    # PgBouncer in transaction mode (before 1.21) hands each transaction any server connection: a statement
    # psycopg prepared on one is unknown to the next.
    database_prepared_statements: bool = Field(
        default=True,
        description="let psycopg prepare statements it runs often on the server (PostgreSQL); false behind "
                    "PgBouncer in transaction mode")
    # What a new key starts with: a deployment's own lets a secret scanning service (GitHub's partner
    # program) tell its keys from everyone else's. Keys of any earlier prefix keep working.
    key_prefix: str = Field(
        default=keys.PREFIX, pattern=rf"^{keys.PREFIX_PATTERN}$",
        description="what every new key starts with (acme_live_, say: a lowercase letter, up to 18 lowercase "
                    "letters, digits or underscores, and a final underscore); keys made before keep working")
    max_body_bytes: int = Field(default=64 * 1024, description="largest request body accepted (413 above it)")
    # Limits in the `limits` notation: "100/second", "5000/hour", ...
    rate_limit: str = Field(default="100/second", description="requests per key")
    organization_rate_limit: str = Field(
        default="1000/second", description="requests per organization, all its keys together")
    verified_key_rate_limit: str | None = Field(
        default=None,
        description="verifications per verified key without a limit of its own (POST /keys/verify; none unless set)")
    # Guessing keys costs lookups, so a client that keeps presenting bad ones is stopped (429) before the
    # database.
    refused_credential_limit: str = Field(
        default="100/minute", description="refused credentials per client address before 429")
    redis_url: str | None = Field(
        default=None, description="Redis for rate limits shared by every worker and server (redis://host:6379)")
    change_feed_retention: int = Field(
        default=3600, description="seconds of changes GET /keys/changes serves (410 for older cursors)")
    console_session_seconds: int = Field(
        default=8 * 3600, description="how long a console session lasts after signing in")
    audit_retention: int | None = Field(
        default=None, ge=1,
        description="seconds the audit trail keeps an event (pruned in small batches; at least the change "
                    "feed's retention, which it serves from); kept forever unless set")
    # GitHub's secret scanning partner program signs its leak reports (POST /leaks/github); keyhouse checks
    # them against the keys GitHub publishes, which the deployment saves from GitHub itself: keyhouse
    # fetches nothing.
    github_secret_scanning_keys: str | None = Field(
        default=None,
        description="a file holding GitHub's secret scanning public keys (the JSON of https://api.github.com/meta/"
                    "public_keys/secret_scanning), for POST /leaks/github; every report is refused unless set")
    # Webhook endpoints are the platforms' servers on the internet: one inside this network would let
    # whoever may register an endpoint make keyhouse send requests to it (server-side request forgery).
    webhook_allow_private_addresses: bool = Field(
        default=False, description="let webhook endpoints be on loopback, private or link-local addresses "
                                   "(a deployment whose endpoints are inside its own network)")
    webhook_sending: bool = Field(
        default=True, description="send webhook deliveries from this process (false: another keyhouse sends them)")
    usage_counting: bool = Field(
        default=True, description="count every verdict on a key for its usage (GET /keys/{key_id}/usage); false: "
                                  "usage stays as it was")
    usage_retention_days: int = Field(
        default=400, ge=1,
        description="days each key's usage is kept per day (per minute: 2 days, per hour: 90, or this if shorter), "
                    "and the addresses it was presented from")

    @field_validator("previous_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.encode() for v in value.split(",") if v)
        return value

    @field_validator("redis_url", "verified_key_rate_limit", "audit_retention", "listen_url",
                     "github_secret_scanning_keys", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @model_validator(mode="after")
    def _trail_outlives_the_feed(self) -> Settings:
        if self.audit_retention is not None and self.audit_retention < self.change_feed_retention:
            raise ValueError(f"KEYHOUSE_AUDIT_RETENTION ({self.audit_retention} s) is shorter than "
                             f"KEYHOUSE_CHANGE_FEED_RETENTION ({self.change_feed_retention} s): the change feed is "
                             "served from the trail, so the trail must keep at least what the feed serves")
        return self

    @model_validator(mode="after")
    def _secret_from_its_file(self) -> Settings:
        if not self.secret:
            object.__setattr__(self, "secret", _load_secret(Path(self.secret_file)))
        return self

    @classmethod
    def from_env(cls) -> Settings:
        return cls()


def _load_secret(path: Path) -> bytes:
    """The secret file, made on first use (mode 0600)."""
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


def _variable(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else []
    return next((c for c in choices if isinstance(c, str) and c.isupper()), f"KEYHOUSE_{name.upper()}")


# What the CLI's `serve` reads itself (its flags set the same variables), beside the settings above.
SERVER_VARIABLES = [
    ("KEYHOUSE_HOST", "127.0.0.1", "the address `keyhouse serve` listens on (--host; the image: 0.0.0.0)"),
    ("KEYHOUSE_PORT", "8080", "the port `keyhouse serve` listens on (--port)"),
    ("KEYHOUSE_WORKERS", "1", "worker processes of `keyhouse serve` (--workers)"),
    ("KEYHOUSE_FORWARDED_ALLOW_IPS", "", "proxies whose X-Forwarded-For is trusted (--forwarded-allow-ips)"),
    ("KEYHOUSE_ALLOW_UNSHARED_LIMITS", "", "serve several workers without Redis, each counting rate limits on "
                                           "its own (--allow-unshared-limits; refused otherwise)"),
    ("KEYHOUSE_LOG_LEVEL", "info", "lowest level of the JSON log lines (--log-level)"),
    ("PROMETHEUS_MULTIPROC_DIR", "a fresh temporary directory when --workers > 1",
     "where the workers' metrics are kept for /metrics"),
]

# OpenTelemetry's own variables that keyhouse.tracing acts on (the SDK reads the rest of OTEL_* as it documents).
TRACING_VARIABLES = [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "", "where traces are sent over OTLP/HTTP (http://collector:4318): setting it "
                                        "turns traces on (the `otel` extra)"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "the same, for traces only (the whole URL, /v1/traces included)"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "the only one keyhouse sends (grpc is warned of, and not used)"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf", "the same, for traces only"),
    ("OTEL_TRACES_EXPORTER", "", "otlp, console or none; otlp when an endpoint is set"),
    ("OTEL_SERVICE_NAME", "keyhouse", "the service name on every span"),
    ("OTEL_RESOURCE_ATTRIBUTES", "", "more attributes of every span's resource (deployment.environment=prod,...)"),
    ("OTEL_TRACES_SAMPLER", "parentbased_always_on", "which requests are traced (parentbased_traceidratio: a share, "
                                                     "and every request of a traced caller)"),
    ("OTEL_TRACES_SAMPLER_ARG", "", "the sampler's argument (0.1: one request in ten)"),
    ("OTEL_PROPAGATORS", "tracecontext,baggage", "the headers a caller's trace is read from (W3C traceparent)"),
    ("OTEL_SDK_DISABLED", "", "true: no traces, whatever else is set"),
]

# Every variable keyhouse reads, for `keyhouse --help` and the README: (name, default, meaning).
ENVIRONMENT = [(_variable(name), "" if field.default in (None, b"", ()) else str(field.default),
                field.description or "") for name, field in Settings.model_fields.items()] \
    + SERVER_VARIABLES + TRACING_VARIABLES


def environment_help() -> str:
    width = max(len(name) for name, _, _ in ENVIRONMENT)
    lines = ["environment variables:"]
    for name, default, meaning in ENVIRONMENT:
        lines.append(f"  {name:<{width}}  {meaning}" + (f" (default: {default})" if default else ""))
    return "\n".join(lines)


def readme_table() -> str:
    """The README's table of variables, made from the declarations (tests/test_operations.py holds the
    README to it: regenerate with `python -c 'from keyhouse.config import readme_table; print(readme_table())'`)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in ENVIRONMENT:
        shown = f"`{default}`" if default and " " not in default else (default or "—")
        rows.append(f"| `{name}` | {shown} | {meaning} |")
    return "\n".join(rows)
