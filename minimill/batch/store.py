"""Batch state in the ledger database: the batches, and one row per finished line.

A line's row (its output or error, as the JSONL line it becomes) is written in the same transaction
as its bill, under the primary key (batch, line): after a crash a line is either done and billed or
not done at all, and it can never be done twice. A restarted server resumes every unfinished batch
from these rows.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from minimill.batch.paging import after_cursor
from minimill.billing.ledger import Ledger, LedgerEntry, add_missing_columns
from minimill.billing.prices import Cost
from minimill.errors import InvalidRequest, NotFound

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
TIMESTAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
              "cancelled_at")

metadata = MetaData()
batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("metadata", Text, nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    *(Column(name, Float, nullable=True) for name in TIMESTAMPS),
    Column("total", Integer, nullable=False, default=0),
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("errors", Text, nullable=True),
    # Which runner works on the batch, until when: replicas sharing a ledger never run one batch twice.
    Column("runner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
)
lines = Table(
    "batch_lines", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(512), nullable=True),
    Column("ok", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Parts of a batch's lines (cut from its groups), each leased to one runner: runners sharing a ledger (replicas)
# run one batch's parts side by side. A row exists once some runner claimed the part.
parts = Table(
    "batch_parts", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("runner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch as stored: what to run, its status and timestamps, and where its results are."""

    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    status: BatchStatus
    created_at: float
    expires_at: float
    times: dict[str, float | None] = field(default_factory=dict)
    total: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, object]] | None = None


@dataclass(frozen=True, slots=True)
class BatchTotals:
    """What a batch has done so far: lines finished and failed, tokens and cost (from the ledger)."""

    completed: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: Cost = field(default_factory=Cost)


def _record(row: Any) -> BatchRecord:
    r = row._mapping
    return BatchRecord(id=r["id"], tenant=r["tenant"], endpoint=r["endpoint"], input_file_id=r["input_file_id"],
                       completion_window=r["completion_window"],
                       metadata=json.loads(r["metadata"]) if r["metadata"] else None, status=r["status"],
                       created_at=r["created_at"], expires_at=r["expires_at"],
                       times={name: r[name] for name in TIMESTAMPS}, total=r["total"],
                       output_file_id=r["output_file_id"], error_file_id=r["error_file_id"],
                       errors=json.loads(r["errors"]) if r["errors"] else None)


def _takeable(table: Table, runner: str, now: float) -> ColumnElement[bool]:
    """A lease row `runner` may take: free, its own, or lapsed."""
    return or_(table.c.runner.is_(None), table.c.runner == runner, table.c.lease_until < now)


class BatchStore:
    """Batches and their finished lines, in the ledger's database. One per runtime."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        metadata.create_all(ledger.engine)
        add_missing_columns(ledger.engine, batches)  # a ledger made before leases

    def create(self, *, tenant: str, endpoint: str, input_file_id: str, completion_window: str,
               window_seconds: float, meta: dict[str, str] | None) -> BatchRecord:
        """A new batch, validating."""
        now = time.time()
        record = BatchRecord(id=f"batch_{secrets.token_hex(12)}", tenant=tenant, endpoint=endpoint,
                             input_file_id=input_file_id, completion_window=completion_window, metadata=meta,
                             status="validating", created_at=now, expires_at=now + window_seconds)
        with self.ledger.transaction() as conn:
            conn.execute(insert(batches).values(
                id=record.id, tenant=tenant, endpoint=endpoint, input_file_id=input_file_id,
                completion_window=completion_window, metadata=json.dumps(meta) if meta else None,
                status="validating", created_at=now, expires_at=record.expires_at, total=0))
        return record

    def get(self, batch_id: str, tenant: str | None = None) -> BatchRecord:
        """A batch (the tenant's own, if `tenant` is given); NotFound otherwise."""
        query = select(batches).where(batches.c.id == batch_id)
        if tenant is not None:
            query = query.where(batches.c.tenant == tenant)
        with self.ledger.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"No batch with id '{batch_id}' exists", param="batch_id", code="batch_not_found")
        return _record(row)

    def page(self, tenant: str, *, limit: int = 20, after: str | None = None) -> list[BatchRecord]:
        """The tenant's batches, newest first; `after` is the last id of the previous page."""
        query = select(batches).where(batches.c.tenant == tenant).order_by(batches.c.created_at.desc(),
                                                                           batches.c.id.desc())
        with self.ledger.engine.connect() as conn:
            return after_cursor([_record(row) for row in conn.execute(query)], after, limit)

    def unfinished(self) -> list[BatchRecord]:
        """Every tenant's batches that still have work, oldest first (what a started server resumes)."""
        query = select(batches).where(batches.c.status.in_(UNFINISHED)).order_by(batches.c.created_at)
        with self.ledger.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def move(self, batch_id: str, status: BatchStatus, *, only_from: tuple[str, ...] = UNFINISHED,
             **values: object) -> bool:
        """Set a batch's status (and its timestamp, and any other columns) if it is in `only_from`."""
        stamp = f"{status}_at"
        if stamp in TIMESTAMPS:
            values.setdefault(stamp, time.time())
        if "errors" in values:
            values["errors"] = json.dumps(values["errors"])
        with self.ledger.transaction() as conn:
            done = conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.status.in_(only_from))
                                .values(status=status, **values))
        return done.rowcount == 1

    def claim(self, batch_id: str, runner: str, now: float, seconds: float) -> bool:
        """Take (or renew) the lease on a batch for `seconds`: True if `runner` holds it now. A lease another
        runner holds is taken only once it has lapsed (its server died or hangs)."""
        with self.ledger.transaction() as conn:
            done = conn.execute(update(batches).where(batches.c.id == batch_id, _takeable(batches, runner, now))
                                .values(runner=runner, lease_until=now + seconds))
        return done.rowcount == 1

    def release(self, batch_id: str, runner: str) -> None:
        """Give up `runner`'s lease on a batch (if it still holds it)."""
        with self.ledger.transaction() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.runner == runner)
                         .values(runner=None, lease_until=None))

    def claim_part(self, batch_id: str, part: int, runner: str, now: float, seconds: float) -> bool:
        """Take (or renew) the lease on one part of a batch's lines, as `claim` does for a batch."""
        with self.ledger.transaction() as conn:
            done = conn.execute(update(parts).where(parts.c.batch_id == batch_id, parts.c.part == part,
                                                    _takeable(parts, runner, now))
                                .values(runner=runner, lease_until=now + seconds))
            if done.rowcount == 1:
                return True
            if conn.execute(select(parts.c.part).where(parts.c.batch_id == batch_id, parts.c.part == part)).first():
                return False  # another runner holds it
        try:  # never claimed: the first to insert its row holds it
            with self.ledger.transaction() as conn:
                conn.execute(insert(parts).values(batch_id=batch_id, part=part, runner=runner,
                                                  lease_until=now + seconds))
        except IntegrityError:
            return False
        return True

    def held_parts(self, batch_id: str, runner: str, now: float) -> set[int]:
        """The parts of a batch that other runners hold now."""
        query = select(parts.c.part).where(parts.c.batch_id == batch_id, parts.c.runner.is_not(None),
                                           parts.c.runner != runner, parts.c.lease_until >= now)
        with self.ledger.engine.connect() as conn:
            return set(conn.scalars(query))

    def renew_parts(self, batch_id: str, runner: str, now: float, seconds: float) -> None:
        """Extend the leases of the parts `runner` holds."""
        with self.ledger.transaction() as conn:
            conn.execute(update(parts).where(parts.c.batch_id == batch_id, parts.c.runner == runner)
                         .values(lease_until=now + seconds))

    def release_parts(self, batch_id: str, runner: str) -> None:
        """Give up the parts `runner` holds."""
        with self.ledger.transaction() as conn:
            conn.execute(update(parts).where(parts.c.batch_id == batch_id, parts.c.runner == runner)
                         .values(runner=None, lease_until=None))

    def cancel(self, tenant: str, batch_id: str) -> BatchRecord:
        """Ask a running batch to stop: status cancelling (the runner finishes the job)."""
        record = self.get(batch_id, tenant)
        if record.status in ("cancelling", "cancelled"):
            return record
        if not self.move(batch_id, "cancelling", only_from=("validating", "in_progress")):
            raise InvalidRequest(f"Cannot cancel a batch with status '{self.get(batch_id).status}'.",
                                 param="batch_id", code="batch_not_cancellable")
        return self.get(batch_id)

    # ---- lines ------------------------------------------------------------------------------
    def done_lines(self, batch_id: str) -> set[int]:
        """Numbers of the lines that have a row (output or error)."""
        with self.ledger.engine.connect() as conn:
            return set(conn.scalars(select(lines.c.line).where(lines.c.batch_id == batch_id)))

    def finish_line(self, batch_id: str, line: int, custom_id: str | None, ok: bool, payload: dict[str, object],
                    bill: LedgerEntry | None = None) -> bool:
        """Record a line's result and its bill in one transaction; False (nothing written) if it was done."""
        with self.ledger.transaction() as conn:
            exists = conn.execute(select(lines.c.line).where(lines.c.batch_id == batch_id, lines.c.line == line))
            if exists.first() is not None:
                return False
            if bill is not None:
                self.ledger.insert_entry(conn, bill)
            conn.execute(insert(lines).values(batch_id=batch_id, line=line, custom_id=custom_id, ok=ok,
                                              payload=json.dumps(payload, ensure_ascii=False),
                                              created_at=time.time()))
        return True

    def results(self, batch_id: str, ok: bool) -> list[str]:
        """The JSONL lines of the output (`ok`) or error file, in input order."""
        query = select(lines.c.payload).where(lines.c.batch_id == batch_id, lines.c.ok.is_(ok)).order_by(lines.c.line)
        with self.ledger.engine.connect() as conn:
            return list(conn.scalars(query))

    def totals(self, record: BatchRecord) -> BatchTotals:
        """Lines finished and failed so far, and the tokens and cost billed under the batch's id."""
        query = select(lines.c.ok, func.count()).where(lines.c.batch_id == record.id).group_by(lines.c.ok)
        with self.ledger.engine.connect() as conn:
            counts = {bool(ok): n for ok, n in conn.execute(query)}
        entries = self.ledger.entries(record.tenant, id_prefix=f"{record.id}:")
        cost = sum((e.cost for e in entries), Cost())
        return BatchTotals(completed=counts.get(True, 0), failed=counts.get(False, 0),
                           prompt_tokens=sum(e.prompt_tokens for e in entries),
                           cached_tokens=sum(e.cached_tokens for e in entries),
                           completion_tokens=sum(e.completion_tokens for e in entries),
                           cost=cost)
