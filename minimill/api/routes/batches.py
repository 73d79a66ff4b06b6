"""`/v1/batches`: create, list, get and cancel batches (run by the server's `BatchRunner`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.batch.runner import BatchRunner
from minimill.batch.store import BatchRecord
from minimill.errors import InvalidRequest, NotFound
from minimill.runtime import Runtime
from minimill.serving.schemas import (
    BatchCreateRequest,
    BatchErrorOut,
    BatchErrors,
    BatchObject,
    BatchUsage,
    CostOut,
    InputTokensDetails,
    Page,
    RequestCounts,
)

router = APIRouter()


def _runner(request: Request) -> BatchRunner[Any]:
    runner: BatchRunner[Any] = request.app.state.batch_runner
    return runner


def batch_object(runtime: Runtime, record: BatchRecord) -> BatchObject:
    """The wire shape of a batch, with its counts, tokens and cost so far."""
    totals = runtime.batches.totals(record)
    times: dict[str, Any] = {name: int(value) if value is not None else None for name, value in record.times.items()}
    errors = BatchErrors(data=[BatchErrorOut(**e) for e in record.errors]) if record.errors else None  # type: ignore[arg-type]
    return BatchObject(
        id=record.id, endpoint=record.endpoint, errors=errors, input_file_id=record.input_file_id,
        completion_window=record.completion_window, status=record.status, output_file_id=record.output_file_id,
        error_file_id=record.error_file_id, created_at=int(record.created_at), expires_at=int(record.expires_at),
        **times, request_counts=RequestCounts(total=record.total, completed=totals.completed, failed=totals.failed),
        metadata=record.metadata,
        usage=BatchUsage(input_tokens=totals.prompt_tokens,
                         input_tokens_details=InputTokensDetails(cached_tokens=totals.cached_tokens),
                         output_tokens=totals.completion_tokens,
                         total_tokens=totals.prompt_tokens + totals.completion_tokens),
        cost=CostOut(**totals.cost.as_dict()))


@router.post("/v1/batches")
async def create_batch(body: BatchCreateRequest, request: Request, runtime: RuntimeDep,
                       tenant: TenantDep) -> BatchObject:
    """Queue the requests of an uploaded JSONL file; they run at the batch discount."""
    try:
        source = runtime.files.get(tenant, body.input_file_id)
    except NotFound as exc:  # the request's field is `input_file_id`, not the file API's `file_id`
        raise NotFound(exc.message, param="input_file_id", code=exc.code) from None
    if source.purpose != "batch":
        raise InvalidRequest(f"file {source.id} has purpose '{source.purpose}'; a batch's input needs 'batch'",
                             param="input_file_id")
    record = await asyncio.to_thread(
        lambda: runtime.batches.create(tenant=tenant, endpoint=body.endpoint, input_file_id=source.id,
                                       completion_window=body.completion_window,
                                       window_seconds=body.window_seconds, meta=body.metadata))
    _runner(request).wake()
    return batch_object(runtime, record)


@router.get("/v1/batches")
async def list_batches(runtime: RuntimeDep, tenant: TenantDep, after: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Page[BatchObject]:
    """The tenant's batches, newest first."""
    records = runtime.batches.page(tenant, limit=limit + 1, after=after)
    return Page[BatchObject].of([batch_object(runtime, r) for r in records[:limit]], has_more=len(records) > limit)


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, runtime: RuntimeDep, tenant: TenantDep) -> BatchObject:
    """One of the tenant's batches."""
    return batch_object(runtime, runtime.batches.get(batch_id, tenant))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, runtime: RuntimeDep, tenant: TenantDep) -> BatchObject:
    """Stop a batch: no new lines start, lines in flight are aborted, finished ones are kept."""
    record = runtime.batches.cancel(tenant, batch_id)
    _runner(request).cancel(batch_id)
    return batch_object(runtime, record)
