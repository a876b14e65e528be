"""The floor: bare Starlette answering the benchmark's two requests with the least work they need.

Same routes, same database, same JSON as keyhouse, and nothing else: the presented key is hashed and
looked up with one SQL statement through the bare database driver, the page is one more, and the answer
is `json.dumps` of plain dicts. No ORM, no validation, no permissions, rate limits or audit, no
framework middleware. keyhouse's figures are quoted as a fraction of this.

With KEYHOUSE_BENCH_STATIC set (a file of answers), it serves those bytes from memory instead, with the
key checked against a dict: what uvicorn and Starlette alone cost, shown for context.

    KEYHOUSE_DATABASE_URL=sqlite:///... KEYHOUSE_SECRET=... uvicorn benchmarks.floor:app
"""

from __future__ import annotations

import json
import os
import sqlite3
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyhouse import keys

_UNAUTHORIZED = Response(b'{"title":"Unauthorized"}', 401, media_type="application/json")


def _connect():
    url = os.environ["KEYHOUSE_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False), "?"
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True), "%s"


def _database_app() -> Starlette:
    db, p = _connect()
    secret = os.environ["KEYHOUSE_SECRET"].encode()
    by_hash = (f"SELECT k.pk, k.id, k.organization_id, k.user_id, k.type, k.permissions, k.expires_at, k.revoked_at, "
               f"k.description, k.owner_id, k.meta FROM api_keys k WHERE k.key_hash = {p}")
    page = (f"SELECT id, description, type, allowed_ips, created_at, updated_at, acl, api_user FROM api_keys "
            f"WHERE organization_id = {p} AND revoked_at IS NULL "
            f"ORDER BY created_at DESC, pk DESC LIMIT {p} OFFSET {p}")
    total = f"SELECT coalesce(sum(live), 0) FROM live_key_counts WHERE organization_id = {p}"

    def caller(presented: str | None):
        if not presented or not keys.is_well_formed(presented):
            return None
        digest = keys.hash_key(secret, presented)
        row = db.execute(by_hash, (digest,)).fetchone()
        return row if row and row[7] is None else None

    def rfc3339(value) -> str:
        return (value if isinstance(value, str) else value.isoformat())[:19].replace(" ", "T") + "Z"

    def loaded(value):
        return json.loads(value) if isinstance(value, str) else value

    async def list_keys(request: Request) -> Response:
        me = caller(request.headers.get("reb-apikey"))
        if me is None:
            return _UNAUTHORIZED
        limit, offset = int(request.query_params.get("limit", 100)), int(request.query_params.get("offset", 0))
        count = db.execute(total, (me[2],)).fetchone()[0]
        body = []
        for r in db.execute(page, (me[2], limit, offset)).fetchall():
            view = {"id": r[0], "description": r[1], "type": r[2], "allowedIps": loaded(r[3]),
                    "createdTime": rfc3339(r[4]), "updatedTime": rfc3339(r[5]),
                    "_links": [{"href": f"/api/v1/api-keys/{quote(r[0], safe='')}", "rel": "self"}]}
            if r[6] is not None:
                view["acl"] = loaded(r[6])
            if r[7] is not None:
                view["apiUser"] = r[7]
            body.append(view)
        headers = {"Pagination-Total": str(count), "Pagination-Limit": str(limit), "Pagination-Offset": str(offset)}
        return Response(json.dumps(body), headers=headers, media_type="application/json")

    async def verify_key(request: Request) -> Response:
        me = caller(request.headers.get("authorization", "").partition(" ")[2])
        if me is None:
            return _UNAUTHORIZED
        found = caller((await request.json()).get("key"))
        if found is None or found[2] != me[2]:
            return Response(b'{"valid": false, "code": "NOT_FOUND"}', media_type="application/json")
        return Response(json.dumps({"valid": True, "code": "VALID", "key_id": found[1], "organization_id": found[2],
                                    "user_id": found[3], "type": found[4], "permissions": loaded(found[5]),
                                    "expires_at": None, "name": found[8], "owner_id": found[9],
                                    "meta": loaded(found[10]), "remaining": None, "secret_valid_until": None}),
                        media_type="application/json")

    return Starlette(routes=[Route("/api/v1/api-keys", list_keys),
                             Route("/api/v1/keys/verify", verify_key, methods=["POST"])])


def _static_app(answers_file: str) -> Starlette:
    with open(answers_file) as f:
        answers = json.load(f)
    known = {answers["key"]}
    listed, listed_headers = json.dumps(answers["list"]["body"]).encode(), answers["list"]["headers"]
    verified = {answers["verify"]["key"]: json.dumps(answers["verify"]["body"]).encode()}

    async def list_keys(request: Request) -> Response:
        if request.headers.get("reb-apikey") not in known:
            return _UNAUTHORIZED
        return Response(listed, headers=listed_headers, media_type="application/json")

    async def verify_key(request: Request) -> Response:
        if request.headers.get("authorization", "").partition(" ")[2] not in known:
            return _UNAUTHORIZED
        presented = (await request.json()).get("key")
        return Response(verified.get(presented, b'{"valid":false,"code":"NOT_FOUND"}'), media_type="application/json")

    return Starlette(routes=[Route("/api/v1/api-keys", list_keys),
                             Route("/api/v1/keys/verify", verify_key, methods=["POST"])])


app = _static_app(os.environ["KEYHOUSE_BENCH_STATIC"]) if os.environ.get("KEYHOUSE_BENCH_STATIC") else _database_app()
