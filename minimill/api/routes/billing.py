"""`GET /v1/usage` (the caller's totals by day and model) and `GET /v1/prices` (the price book)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from minimill.api.deps import RuntimeDep, TenantDep

router = APIRouter()


@router.get("/v1/usage")
async def usage(runtime: RuntimeDep, tenant: TenantDep) -> dict[str, object]:
    """The caller's tokens and cost by day and model, with a grand total."""
    rows = await asyncio.to_thread(runtime.meter.usage, tenant)
    data = [row.as_dict() for row in rows]
    total = {"requests": sum(r.requests for r in rows), "prompt_tokens": sum(r.prompt_tokens for r in rows),
             "cached_tokens": sum(r.cached_tokens for r in rows),
             "completion_tokens": sum(r.completion_tokens for r in rows),
             "cost": float(sum((r.cost.total for r in rows), start=0))}
    return {"object": "list", "data": data, "total": total}


@router.get("/v1/prices")
async def prices(runtime: RuntimeDep) -> dict[str, object]:
    """USD per 1M tokens (cache storage and session retention: per 1M token-hours) for each served model."""
    return {"object": "price_book", "currency": "usd",
            "data": runtime.meter.prices.as_dict(runtime.model_ids)}
