"""A documents API guarded by keyhouse: the three lines marked 1, 2 and 3 are all it takes.

Its contract, `openapi.yaml`, is declared to keyhouse as the API `documents`; every request is verified
for the operationId it routes to, from the key in `X-API-Key`. Run it with

    KEYHOUSE_URL=http://127.0.0.1:8080/api/v1 KEYHOUSE_GATEWAY_KEY=kh_... \
        uvicorn examples.guarded_fastapi.app:app --port 8000

where the gateway key holds `verifyKey` and `listKeyChanges`.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response

from keyhouse_client import AsyncKeyhouse, KeyhouseMiddleware, VerdictCache  # 1

OPENAPI = Path(__file__).with_name("openapi.yaml")


def create_app(keyhouse: AsyncKeyhouse, guarded: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app):
        yield
        await keyhouse.aclose()

    app = FastAPI(title="Documents", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    if guarded:
        app.add_middleware(KeyhouseMiddleware, keyhouse=keyhouse, openapi=OPENAPI, api="documents")  # 3

    @app.get("/documents/{id}")
    async def get_document(id: str, request: Request) -> dict:
        verdict = getattr(request.state, "keyhouse", None)  # who is calling, as keyhouse knows them
        return {"id": id, "owner_id": verdict.owner_id if verdict else None}

    @app.delete("/documents/{id}", status_code=204)
    async def delete_document(id: str) -> Response:
        return Response(status_code=204)

    @app.get("/health")
    async def get_health() -> dict:
        return {"status": "ok"}

    return app


if "KEYHOUSE_URL" in os.environ:  # served with uvicorn; GUARDED=0 serves the same app unguarded (benchmarks)
    cache = VerdictCache(int(os.environ.get("KEYHOUSE_CACHE_SIZE", 10_000)))  # benchmarks/guard.py sets 1: all misses
    keyhouse = AsyncKeyhouse(os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_GATEWAY_KEY"], cache=cache)  # 2
    app = create_app(keyhouse, guarded=os.environ.get("GUARDED", "1") == "1")
