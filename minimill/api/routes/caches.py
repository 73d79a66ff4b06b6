"""`/v1/caches`: explicit prompt caches (create, list, get, extend, delete)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from minimill.api.auth import key_in
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.engine.client import EngineClient
from minimill.errors import PermissionDenied
from minimill.kv.caches import CacheRecord
from minimill.runtime import Runtime
from minimill.serving import bounds, convert
from minimill.serving.schemas import (
    CacheCreateRequest,
    CacheDeleted,
    CacheList,
    CacheObject,
    CacheUpdateRequest,
    UsageOut,
)

router = APIRouter()


async def cache_object(runtime: Runtime, record: CacheRecord, usage: UsageOut | None = None) -> CacheObject:
    """The wire shape of a cache, with where its KV is now (asked of the engine process, off the event loop)."""
    tier = await asyncio.to_thread(runtime.engine_for(record.model).tier_of, record.kv_name)
    return CacheObject(id=record.id, model=record.model, tokens=len(record.tokens), created_at=int(record.created_at),
                       expires_at=int(record.expires_at), tier=tier, shared=record.shared, usage=usage)


def prefix_tokens(body: CacheCreateRequest, runtime: Runtime, engine: EngineClient) -> list[int]:
    """The cache's prefix as token ids, within the request bounds (run off the event loop)."""
    limits = runtime.config.limits
    if body.messages is not None:
        return engine.chat_tokens(convert.bounded_messages(body.messages, engine, limits), open_turn=False)
    assert body.prompt is not None  # the schema requires one of the two
    if isinstance(body.prompt, str):
        bounds.check_text_fits([body.prompt], engine.longest_piece, engine.n_ctx, "prompt")
    return convert.prompt_tokens(body.prompt, engine)


@router.post("/v1/caches")
async def create_cache(body: CacheCreateRequest, request: Request, runtime: RuntimeDep,
                       tenant: TenantDep) -> CacheObject:
    """Prefill a prefix once and keep its KV for `ttl_seconds`; billed as input plus storage."""
    engine = runtime.engine_for(body.model)
    server = runtime.config.server
    if body.shared and server.api_keys and not key_in(request.headers.get("authorization", ""), server.admin_keys):
        raise PermissionDenied("only an admin key may create a shared cache", param="shared")
    tokens = await asyncio.to_thread(prefix_tokens, body, runtime, engine)
    record, usage, cost = await runtime.caches.create(tenant=tenant, model=engine.name, tokens=tokens,
                                                      ttl=body.ttl_seconds, shared=body.shared)
    return await cache_object(runtime, record, convert.usage_out(usage, cost))


@router.get("/v1/caches")
async def list_caches(runtime: RuntimeDep, tenant: TenantDep) -> CacheList:
    """The caller's live caches and the server's shared ones."""
    return CacheList(data=[await cache_object(runtime, r) for r in runtime.caches.list(tenant)])


@router.get("/v1/caches/{cache_id}")
async def get_cache(cache_id: str, runtime: RuntimeDep, tenant: TenantDep) -> CacheObject:
    """One cache the caller may use."""
    return await cache_object(runtime, runtime.caches.get(tenant, cache_id))


@router.patch("/v1/caches/{cache_id}")
async def extend_cache(cache_id: str, body: CacheUpdateRequest, runtime: RuntimeDep, tenant: TenantDep) -> CacheObject:
    """Keep an own cache `ttl_seconds` from now; the added storage is billed."""
    record, cost = runtime.caches.extend(tenant, cache_id, body.ttl_seconds)
    return await cache_object(runtime, record, convert.usage_out(None, cost))


@router.delete("/v1/caches/{cache_id}")
async def delete_cache(cache_id: str, runtime: RuntimeDep, tenant: TenantDep) -> CacheDeleted:
    """Delete an own cache and free its KV in every tier."""
    return CacheDeleted(id=runtime.caches.delete(tenant, cache_id).id)
