"""`/v1/files`: upload, list, read and delete a tenant's files (batch inputs and outputs)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import Response

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.batch.files import FileRecord
from minimill.errors import InvalidRequest
from minimill.serving.schemas import FileDeleted, FileObject, Page

router = APIRouter()


def file_object(record: FileRecord) -> FileObject:
    """The wire shape of a stored file."""
    return FileObject(id=record.id, bytes=record.bytes, created_at=int(record.created_at), filename=record.filename,
                      purpose=record.purpose)


@router.post("/v1/files")
async def upload_file(file: UploadFile, purpose: Annotated[str, Form()], runtime: RuntimeDep,
                      tenant: TenantDep) -> FileObject:
    """Store an uploaded file (multipart: `file`, `purpose=batch`)."""
    limit = runtime.files.max_bytes
    data = await file.read(limit + 1)  # one byte more than allowed is enough to refuse it
    if len(data) > limit:
        raise InvalidRequest(f"the file is larger than the limit of {limit} bytes", param="file",
                             code="file_too_large")
    record = await asyncio.to_thread(runtime.files.upload, tenant, purpose, file.filename or "upload.jsonl", data)
    return file_object(record)


@router.get("/v1/files")
async def list_files(runtime: RuntimeDep, tenant: TenantDep, purpose: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10000)] = 10000, after: str | None = None,
                     order: Literal["asc", "desc"] = "desc") -> Page[FileObject]:
    """The tenant's files, newest first unless `order=asc`."""
    records = runtime.files.page(tenant, purpose=purpose, limit=limit + 1, after=after, newest_first=order == "desc")
    return Page[FileObject].of([file_object(r) for r in records[:limit]], has_more=len(records) > limit)


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, runtime: RuntimeDep, tenant: TenantDep) -> FileObject:
    """One of the tenant's files."""
    return file_object(runtime.files.get(tenant, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, runtime: RuntimeDep, tenant: TenantDep) -> Response:
    """The file's bytes."""
    data = await asyncio.to_thread(runtime.files.content, tenant, file_id)
    return Response(data, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, runtime: RuntimeDep, tenant: TenantDep) -> FileDeleted:
    """Delete one of the tenant's files; not the input of a batch that has not finished (it is read again
    when the batch resumes after a restart)."""
    runtime.files.get(tenant, file_id)
    using = [b.id for b in runtime.batches.unfinished() if b.tenant == tenant and b.input_file_id == file_id]
    if using:
        raise InvalidRequest(f"file {file_id} is the input of batch {using[0]}, which has not finished; "
                             "cancel it or wait for it first", param="file_id", code="file_in_use")
    return FileDeleted(id=runtime.files.delete(tenant, file_id).id)
