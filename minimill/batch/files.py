"""Files API storage: a tenant's uploaded files (batch inputs) and the batch output files.

Metadata lives in the ledger database beside the batches that use them. Contents live under the data
directory, one file per id, written atomically before the database row that makes them visible; or, when
the ledger is a database server (PostgreSQL), in the database itself, in chunks written in the same
transaction as the row: replicas on several hosts share the ledger, not a directory.
"""

from __future__ import annotations

import errno
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)

from minimill.batch.paging import after_cursor
from minimill.billing.ledger import Ledger
from minimill.durable import write_atomically
from minimill.errors import InsufficientStorage, InvalidRequest, NotFound

UPLOAD_PURPOSES = ("batch",)
CHUNK_BYTES = 4 << 20  # a file's content in the database: rows of this many bytes (no single huge value)

metadata = MetaData()
files = Table(
    "files", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
)
chunks = Table(
    "file_chunks", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A stored file: owner, purpose, name and size."""

    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: float


def _record(row: object) -> FileRecord:
    r = row._mapping  # type: ignore[attr-defined]
    return FileRecord(id=r["id"], tenant=r["tenant"], purpose=r["purpose"], filename=r["filename"],
                      bytes=r["bytes"], created_at=r["created_at"])


class FileStore:
    """Create, list, read and delete files, per tenant. One per runtime."""

    def __init__(self, ledger: Ledger, directory: Path, max_bytes: int) -> None:
        self.ledger = ledger
        self.directory = directory
        self.max_bytes = max_bytes
        # SQLite is one host's file: contents stay on its disk. A database server is shared: contents go in it.
        self.in_database = ledger.engine.dialect.name != "sqlite"
        directory.mkdir(parents=True, exist_ok=True)
        metadata.create_all(ledger.engine)

    def upload(self, tenant: str, purpose: str, filename: str, data: bytes) -> FileRecord:
        """A client's upload: checked for purpose and size."""
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}, got '{purpose}'",
                                 param="purpose")
        if not data:
            raise InvalidRequest("the file is empty", param="file")
        if len(data) > self.max_bytes:
            raise InvalidRequest(f"the file has {len(data)} bytes; the limit is {self.max_bytes}", param="file",
                                 code="file_too_large")
        return self.put(tenant, purpose, filename, data)

    def put(self, tenant: str, purpose: str, filename: str, data: bytes, file_id: str | None = None) -> FileRecord:
        """Store `data`; with `file_id` given, replace any file of that id (a repeated batch finalisation)."""
        record = FileRecord(id=file_id or f"file-{secrets.token_hex(12)}", tenant=tenant, purpose=purpose,
                            filename=filename[:512] or "file", bytes=len(data), created_at=time.time())
        if not self.in_database:
            try:
                write_atomically(self.directory / record.id, data)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage("The server has no space left to store this file; nothing was kept.",
                                              param="file", code="insufficient_storage") from exc
                raise
        try:
            with self.ledger.transaction() as conn:
                conn.execute(delete(files).where(files.c.id == record.id))
                conn.execute(delete(chunks).where(chunks.c.file_id == record.id))
                if self.in_database:
                    for seq, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                        conn.execute(insert(chunks).values(file_id=record.id, seq=seq,
                                                           data=data[start:start + CHUNK_BYTES]))
                conn.execute(insert(files).values(id=record.id, tenant=tenant, purpose=purpose,
                                                  filename=record.filename, bytes=record.bytes,
                                                  created_at=record.created_at, deleted=False))
        except Exception:
            if not self.in_database:
                (self.directory / record.id).unlink(missing_ok=True)
            raise
        return record

    def get(self, tenant: str, file_id: str) -> FileRecord:
        """A file the tenant owns; NotFound otherwise."""
        with self.ledger.engine.connect() as conn:
            row = conn.execute(select(files).where(files.c.id == file_id, files.c.tenant == tenant,
                                                   files.c.deleted.is_(False))).first()
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return _record(row)

    def page(self, tenant: str, *, purpose: str | None = None, limit: int = 10000, after: str | None = None,
             newest_first: bool = True) -> list[FileRecord]:
        """The tenant's files, newest first by default; `after` is the last id of the previous page."""
        query = select(files).where(files.c.tenant == tenant, files.c.deleted.is_(False))
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        order = (files.c.created_at.desc(), files.c.id.desc()) if newest_first else (files.c.created_at, files.c.id)
        with self.ledger.engine.connect() as conn:
            return after_cursor([_record(row) for row in conn.execute(query.order_by(*order))], after, limit)

    def content(self, tenant: str, file_id: str) -> bytes:
        """The bytes of a file the tenant owns."""
        record = self.get(tenant, file_id)
        if self.in_database:
            with self.ledger.engine.connect() as conn:
                parts = list(conn.scalars(select(chunks.c.data).where(chunks.c.file_id == record.id)
                                          .order_by(chunks.c.seq)))
            data = b"".join(parts)
            if len(data) != record.bytes:
                raise NotFound(f"the content of file {file_id} is missing", param="file_id")
            return data
        try:
            return (self.directory / record.id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the content of file {file_id} is missing", param="file_id") from None

    def delete(self, tenant: str, file_id: str) -> FileRecord:
        """Delete a file the tenant owns (row marked, content removed)."""
        record = self.get(tenant, file_id)
        with self.ledger.transaction() as conn:
            conn.execute(update(files).where(files.c.id == file_id).values(deleted=True))
            conn.execute(delete(chunks).where(chunks.c.file_id == file_id))
        (self.directory / file_id).unlink(missing_ok=True)
        return record
