"""`/v1/caches`: explicit prompt caches (create, list, get, extend, delete)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from minimill.api import convert
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.schemas import CacheCreateRequest, CacheDeleted, CacheList, CacheObject, CacheUpdateRequest, UsageOut
from minimill.errors import PermissionDenied
from minimill.kv.caches import CacheRecord
from minimill.runtime import Runtime

router = APIRouter()


def cache_object(runtime: Runtime, record: CacheRecord, usage: UsageOut | None = None) -> CacheObject:
    """The wire shape of a cache, with where its KV is now."""
    return CacheObject(id=record.id, model=record.model, tokens=len(record.tokens), created_at=int(record.created_at),
                       expires_at=int(record.expires_at), tier=runtime.engine_for(record.model).tier_of(record.kv_name),
                       shared=record.shared, usage=usage)


@router.post("/v1/caches")
async def create_cache(body: CacheCreateRequest, request: Request, runtime: RuntimeDep,
                       tenant: TenantDep) -> CacheObject:
    """Prefill a prefix once and keep its KV for `ttl_seconds`; billed as input plus storage."""
    engine = runtime.engine_for(body.model)
    server = runtime.config.server
    if body.shared and server.api_keys and not convert.bearer_in(request, server.admin_keys):
        raise PermissionDenied("only an admin key may create a shared cache", param="shared")
    if body.messages is not None:
        tokens = engine.chat_tokens(convert.messages_of(body.messages), open_turn=False)
    else:
        assert body.prompt is not None  # the schema requires one of the two
        tokens = convert.prompt_tokens(body.prompt, engine)
    record, usage, cost = await runtime.caches.create(tenant=tenant, model=engine.name, tokens=tokens,
                                                      ttl=body.ttl_seconds, shared=body.shared)
    return cache_object(runtime, record, convert.usage_out(usage, cost))


@router.get("/v1/caches")
async def list_caches(runtime: RuntimeDep, tenant: TenantDep) -> CacheList:
    """The caller's live caches and the server's shared ones."""
    return CacheList(data=[cache_object(runtime, r) for r in runtime.caches.list(tenant)])


@router.get("/v1/caches/{cache_id}")
async def get_cache(cache_id: str, runtime: RuntimeDep, tenant: TenantDep) -> CacheObject:
    """One cache the caller may use."""
    return cache_object(runtime, runtime.caches.get(tenant, cache_id))


@router.patch("/v1/caches/{cache_id}")
async def extend_cache(cache_id: str, body: CacheUpdateRequest, runtime: RuntimeDep, tenant: TenantDep) -> CacheObject:
    """Keep an own cache `ttl_seconds` from now; the added storage is billed."""
    record, cost = runtime.caches.extend(tenant, cache_id, body.ttl_seconds)
    return cache_object(runtime, record, convert.usage_out(None, cost))


@router.delete("/v1/caches/{cache_id}")
async def delete_cache(cache_id: str, runtime: RuntimeDep, tenant: TenantDep) -> CacheDeleted:
    """Delete an own cache and free its KV in every tier."""
    return CacheDeleted(id=runtime.caches.delete(tenant, cache_id).id)
