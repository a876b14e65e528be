"""`keyhouse`: bootstrap an organization, add users, serve the API.

Every command that makes something prints one JSON object on its last line, so scripts can read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta

from . import keys, logs, tracing
from .config import Settings, environment_help
from .store import api_keys, organizations
from .store.session import SchemaOutOfDate, Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyhouse",
        description="Self-hosted API keys in the shapes of three public APIs.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bootstrap = commands.add_parser("bootstrap", help="create the schema, an organization, its admin and a key")
    bootstrap.add_argument("--organization", required=True, help="the organization's name")
    bootstrap.add_argument("--email", required=True, help="the admin's email")

    users = commands.add_parser("users", help="manage users")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    create = user_commands.add_parser("create", help="create a user and their first key")
    create.add_argument("--organization", required=True, help="the organization's ID")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=["admin", "member"])

    keys_parser = commands.add_parser("keys", help="bulk operations on keys")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    load = keys_commands.add_parser("load", help="load N synthetic keys fast, for benchmarks (their secrets are "
                                                 "made and dropped: none of them can be used)")
    load.add_argument("--organization", required=True, help="the organization's ID")
    load.add_argument("--user", required=True, help="the owner's user ID")
    load.add_argument("--count", required=True, type=int)
    load.add_argument("--batch", type=int, default=10_000)

    db = commands.add_parser("db", help="manage the database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", help="apply every schema migration not yet applied")

    serve = commands.add_parser("serve", help="serve the API (Swagger UI at /api/v1/ui)")
    serve.add_argument("--host", default=os.environ.get("KEYHOUSE_HOST", "127.0.0.1"),
                       help="the address to listen on (env KEYHOUSE_HOST)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("KEYHOUSE_PORT", 8080)),
                       help="the port to listen on (env KEYHOUSE_PORT)")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("KEYHOUSE_WORKERS", 1)),
                       help="worker processes sharing the database (env KEYHOUSE_WORKERS); rate limits are "
                            "shared between them only through Redis (KEYHOUSE_REDIS_URL)")
    serve.add_argument(
        "--forwarded-allow-ips", default=os.environ.get("KEYHOUSE_FORWARDED_ALLOW_IPS"),
        help="addresses of the reverse proxies whose X-Forwarded-For names the client (comma-separated, or *); "
             "by default no forwarded header is trusted and the client is the TCP peer "
             "(env KEYHOUSE_FORWARDED_ALLOW_IPS)",
    )
    serve.add_argument("--allow-unshared-limits", action="store_true",
                       default=os.environ.get("KEYHOUSE_ALLOW_UNSHARED_LIMITS", "").lower() in ("1", "true", "yes"),
                       help="serve several workers without Redis, each counting rate limits on its own (every "
                            "limit multiplied by --workers); refused otherwise (env KEYHOUSE_ALLOW_UNSHARED_LIMITS)")
    serve.add_argument("--log-level", default=os.environ.get("KEYHOUSE_LOG_LEVEL", "info"),
                       choices=["debug", "info", "warning", "error"],
                       help="JSON log lines on stderr from this level up; one access line per request at info "
                            "(env KEYHOUSE_LOG_LEVEL)")
    return parser


def _fail(message: str) -> int:
    print(json.dumps({"error": message}))
    return 1


def _new_user(store: Store, settings: Settings, organization_id: str, email: str, role: str) -> dict | None:
    with store.session() as s:
        if organizations.user_by_email(s, email) is not None:
            return None
        user = organizations.create_user(s, organization_id, email, role)
        new = keys.new(settings.secret, settings.key_prefix)
        api_keys.issue_key(s, api_keys.Hashed(new.hash, new.hint), actor=None, organization_id=organization_id,
                           user_id=user.id, description=f"first key of {email}")
        plaintext = new.plaintext
        return {"organization_id": organization_id, "user_id": user.id, "role": role, "key": plaintext}


def _load_keys(store: Store, settings: Settings, args) -> int:
    from tqdm import tqdm

    from . import keys
    from .store.models import new_id, utcnow

    with store.session() as s:
        user = organizations.get_user(s, args.organization, args.user)
    if user is None:
        return _fail(f"no user {args.user} in organization {args.organization}")
    started, now = time.monotonic(), utcnow()
    with tqdm(total=args.count, unit="key", file=sys.stderr, disable=None) as progress:
        for first in range(0, args.count, args.batch):
            rows = []
            for i in range(first, min(first + args.batch, args.count)):
                new = keys.new(settings.secret, settings.key_prefix)
                moment = now - timedelta(seconds=i)  # spread in time, so that time sorts mean something
                rows.append({"id": new_id(), "user_id": user.id, "description": f"synthetic {i:07d}",
                             "type": "publishable" if i % 10 == 0 else "secret", "api_user": f"user{i % 100}",
                             "permissions": ["*"], "key_hash": new.hash, "key_hint": new.hint,
                             "created_at": moment, "updated_at": moment})
            with store.session() as s:
                api_keys.insert_keys(s, args.organization, rows)
            progress.update(len(rows))
    print(json.dumps({"loaded": args.count, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    store = Store(settings.database_url, pool_size=settings.database_pool_size,
                  max_overflow=settings.database_max_overflow,
                  prepared_statements=settings.database_prepared_statements)
    try:
        return _run(args, settings, store)
    except SchemaOutOfDate as e:
        return _fail(str(e))
    finally:
        store.dispose()


def _run(args, settings: Settings, store: Store) -> int:
    if args.command == "db":
        store.upgrade()
        print(json.dumps({"revision": store.revision()}))
        return 0
    if args.command == "keys":
        store.require_current()
        return _load_keys(store, settings, args)
    if args.command == "serve":
        import uvicorn

        store.require_current()
        if args.workers > 1 and not settings.redis_url and not args.allow_unshared_limits:
            # Each worker would count every limit (refused credentials per address too) on its own.
            return _fail(f"--workers {args.workers} without KEYHOUSE_REDIS_URL: each worker would count rate "
                         f"limits on its own, every limit {args.workers} times over. Set KEYHOUSE_REDIS_URL, "
                         "or pass --allow-unshared-limits (KEYHOUSE_ALLOW_UNSHARED_LIMITS=true).")

        # Uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise; keyhouse trusts no proxy
        # it was not told about, because allowedIps decisions rest on the client address.
        trusted = args.forwarded_allow_ips
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Each worker writes its metrics here; /metrics sums them (keyhouse.metrics).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="keyhouse-metrics-")
        uvicorn.run("keyhouse.app:served", factory=True, host=args.host, port=args.port, workers=args.workers,
                    proxy_headers=bool(trusted), forwarded_allow_ips=trusted or "",
                    log_config=logs.config(args.log_level.upper(), traced=tracing.wanted()), access_log=False,
                    http="keyhouse.protocol:BoundedHttpToolsProtocol")
        return 0

    if args.command == "bootstrap":
        if store.is_empty():  # a new database gets the schema; an old one must be upgraded on purpose
            store.upgrade()
        store.require_current()
        with store.session() as s:
            organization_id = organizations.create_organization(s, args.organization).id
        made = _new_user(store, settings, organization_id, args.email, "admin")
        if made is None:
            return _fail(f"a user with the email {args.email} already exists")
        print(json.dumps({k: made[k] for k in ("organization_id", "user_id", "key")}))
        return 0
    store.require_current()
    with store.session() as s:
        if organizations.get_organization(s, args.organization) is None:
            return _fail(f"no organization with the ID {args.organization}")
    made = _new_user(store, settings, args.organization, args.email, args.role)
    if made is None:
        return _fail(f"a user with the email {args.email} already exists")
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
