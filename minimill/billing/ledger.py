"""The ledger: every billable event and every prompt-cache record, in SQLite or PostgreSQL.

SQLAlchemy Core, synchronous and thread-safe (the API calls it from worker threads). Each write is
one transaction that holds both the fact and its bill, so nothing is recorded unbilled or billed
unrecorded. SQLite runs in WAL mode with `synchronous=FULL`: a committed row survives SIGKILL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import Engine as SQLEngine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.types import TypeEngine

from minimill.billing.prices import Cost
from minimill.errors import InvalidRequest, LedgerUnavailable, NotFound
from minimill.kv.caches import CacheRecord


class Exact(TypeDecorator[Decimal]):
    """A decimal kept exactly: NUMERIC(38, 18) in PostgreSQL; text in SQLite, whose NUMERIC is a float."""

    impl = String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, 18))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value)).normalize()


metadata = MetaData()
COST_COLUMNS = ("input", "cached_input", "output", "cache_storage", "session_retention")

ledger = Table(
    "ledger", metadata,
    Column("id", String(96), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("day", String(10), nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("stored_token_seconds", Exact, nullable=False),
    *(Column(f"cost_{name}", Exact, nullable=False) for name in COST_COLUMNS),
    Column("cost_total", Exact, nullable=False),
    # Added after the first release: nullable, and added to an older database by `Ledger.__init__`.
    Column("latency_ms", Float),  # from the request's arrival to its bill
    Column("cache_id", String(64)),  # the explicit prompt cache the request named
    Column("session", String(256)),  # the client's session_id / prompt_cache_key, when it kept a session
    Column("kept_tokens", Integer),  # tokens of the session's KV pinned after the request
    Column("kept_until", Float),  # unix time that pin ends
)

caches = Table(
    "caches", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("tokens", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("shared", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
)


def day_of(timestamp: float) -> str:
    """The UTC calendar day of a unix time."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One billable event: a finished request, a cache created or extended, a session kept."""

    id: str
    tenant: str
    model: str
    kind: str
    cost: Cost
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    stored_token_seconds: Decimal = Decimal(0)
    created_at: float = field(default_factory=time.time)
    latency_ms: float | None = None
    cache_id: str | None = None
    session: str | None = None
    kept_tokens: int = 0
    kept_until: float | None = None

    def row(self) -> dict[str, Any]:
        """The ledger row."""
        costs = {f"cost_{name}": getattr(self.cost, name) for name in COST_COLUMNS}
        return {"id": self.id, "tenant": self.tenant, "model": self.model, "kind": self.kind,
                "created_at": self.created_at, "day": day_of(self.created_at), "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "completion_tokens": self.completion_tokens,
                "stored_token_seconds": self.stored_token_seconds, **costs, "cost_total": self.cost.total,
                "latency_ms": self.latency_ms, "cache_id": self.cache_id, "session": self.session,
                "kept_tokens": self.kept_tokens, "kept_until": self.kept_until}


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A tenant's totals for one day and model."""

    day: str
    model: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost: Cost

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, costs in USD."""
        return {"date": self.day, "model": self.model, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens, "cost": self.cost.as_dict()}


def _cost_of(row: Any) -> Cost:
    return Cost(*(row[f"cost_{name}"] for name in COST_COLUMNS))


def entry_of(row: Any) -> LedgerEntry:
    """The entry a ledger row (a mapping) holds; a row written before the later columns reads as their defaults."""
    return LedgerEntry(id=row["id"], tenant=row["tenant"], model=row["model"], kind=row["kind"], cost=_cost_of(row),
                       prompt_tokens=row["prompt_tokens"], cached_tokens=row["cached_tokens"],
                       completion_tokens=row["completion_tokens"], stored_token_seconds=row["stored_token_seconds"],
                       created_at=row["created_at"], latency_ms=row["latency_ms"], cache_id=row["cache_id"],
                       session=row["session"], kept_tokens=row["kept_tokens"] or 0, kept_until=row["kept_until"])


def _record_of(row: Any) -> CacheRecord:
    return CacheRecord(id=row["id"], tenant=row["tenant"], model=row["model"], tokens=tuple(json.loads(row["tokens"])),
                       shared=bool(row["shared"]), created_at=row["created_at"], expires_at=row["expires_at"])


class Ledger:
    """The database behind billing and prompt-cache records."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine: SQLEngine = create_engine(url, connect_args={"check_same_thread": False} if sqlite else {},
                                               pool_pre_ping=not sqlite)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_durable)
        metadata.create_all(self.engine)
        add_missing_columns(self.engine, ledger)

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; a database that is down or locked raises LedgerUnavailable (HTTP 503)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:  # say so, never answer unbilled
            raise LedgerUnavailable("the ledger database could not be written; please retry") from exc

    # ---- billing ------------------------------------------------------------------------------
    def record(self, entry: LedgerEntry) -> None:
        """Write one billable event in its own transaction; a repeated id is refused."""
        with self.transaction() as conn:
            self.insert_entry(conn, entry)

    def insert_entry(self, conn: Connection, entry: LedgerEntry) -> None:
        """Add a billable event inside a caller's transaction (with the fact it bills)."""
        try:
            conn.execute(insert(ledger).values(entry.row()))
        except IntegrityError as exc:
            raise InvalidRequest(f"ledger entry '{entry.id}' was already recorded") from exc

    def entries(self, tenant: str, id_prefix: str | None = None) -> list[LedgerEntry]:
        """A tenant's events (those whose id starts with `id_prefix`, if given), oldest first."""
        query = select(ledger).where(ledger.c.tenant == tenant)
        if id_prefix is not None:
            query = query.where(ledger.c.id.startswith(id_prefix, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(ledger.c.created_at))
            return [entry_of(r) for r in rows.mappings()]

    def usage(self, tenant: str) -> list[UsageRow]:
        """A tenant's totals by day and model, each token class and cost.

        Summed here in Decimal rather than in SQL: SQLite would sum money as floats.
        """
        columns = [ledger.c[name] for name in ("day", "model", "prompt_tokens", "cached_tokens", "completion_tokens",
                                               *(f"cost_{n}" for n in COST_COLUMNS))]
        query = select(*columns).where(ledger.c.tenant == tenant).order_by(ledger.c.day, ledger.c.model)
        totals: dict[tuple[str, str], UsageRow] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query).mappings():
                key = (r["day"], r["model"])
                row = totals.get(key) or UsageRow(day=r["day"], model=r["model"], requests=0, prompt_tokens=0,
                                                  cached_tokens=0, completion_tokens=0, cost=Cost())
                totals[key] = UsageRow(day=row.day, model=row.model, requests=row.requests + 1,
                                       prompt_tokens=row.prompt_tokens + r["prompt_tokens"],
                                       cached_tokens=row.cached_tokens + r["cached_tokens"],
                                       completion_tokens=row.completion_tokens + r["completion_tokens"],
                                       cost=row.cost + _cost_of(r))
        return list(totals.values())

    # ---- prompt-cache records -----------------------------------------------------------------
    def put_cache(self, record: CacheRecord, entry: LedgerEntry | None = None) -> None:
        """Store a new cache and, if given, bill its creation in the same transaction.

        A refused bill (repeated id) leaves no cache row; a repeated cache id leaves no bill.
        """
        with self.engine.begin() as conn:
            if entry is not None:
                self.insert_entry(conn, entry)
            try:
                conn.execute(insert(caches).values(
                    id=record.id, tenant=record.tenant, model=record.model, tokens=json.dumps(list(record.tokens)),
                    token_count=len(record.tokens), shared=record.shared, created_at=record.created_at,
                    expires_at=record.expires_at, deleted=False))
            except IntegrityError as exc:
                raise InvalidRequest(f"cache '{record.id}' already exists") from exc

    def extend_cache(self, cache_id: str, expires_at: float, entry: LedgerEntry | None = None) -> None:
        """Move a live (not deleted) cache's expiry and, if given, bill the added storage, atomically.

        Raises NotFound, billing nothing, when the cache is unknown or deleted: the bill is only
        written together with the extension it pays for.
        """
        with self.engine.begin() as conn:
            if entry is not None:
                self.insert_entry(conn, entry)
            done = conn.execute(update(caches).where(caches.c.id == cache_id, caches.c.deleted.is_(False))
                                .values(expires_at=expires_at))
            if done.rowcount != 1:
                raise NotFound(f"no cache '{cache_id}'", param="cache_id")

    def get_cache(self, cache_id: str) -> CacheRecord | None:
        """A cache that was not deleted (expired ones included)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(caches).where(caches.c.id == cache_id, caches.c.deleted.is_(False))
                               ).mappings().first()
        return None if row is None else _record_of(row)

    def list_caches(self, tenant: str) -> list[CacheRecord]:
        """The tenant's caches and the shared ones, not deleted, oldest first."""
        query = (select(caches).where(caches.c.deleted.is_(False), (caches.c.tenant == tenant) | caches.c.shared)
                 .order_by(caches.c.created_at))
        with self.engine.connect() as conn:
            return [_record_of(row) for row in conn.execute(query).mappings()]

    def delete_cache(self, cache_id: str) -> None:
        """Mark a cache deleted (its billing rows stay)."""
        with self.engine.begin() as conn:
            conn.execute(update(caches).where(caches.c.id == cache_id).values(deleted=True))

    def live_caches(self, now: float) -> list[CacheRecord]:
        """Every tenant's caches that are neither deleted nor expired at `now`, oldest first.

        For the server's start: these are the caches whose KV it must keep (or load back).
        """
        query = (select(caches).where(caches.c.deleted.is_(False), caches.c.expires_at > now)
                 .order_by(caches.c.created_at))
        with self.engine.connect() as conn:
            return [_record_of(row) for row in conn.execute(query).mappings()]


def add_missing_columns(engine: SQLEngine, table: Table) -> list[str]:
    """Add to the database's `table` the columns it lacks (made by an older minimill), each with
    `ALTER TABLE ... ADD COLUMN`; returns their names. Only nullable columns can be added this way.

    Two servers starting together may both try: a column the other one added meanwhile is not an error.
    """
    present = {column["name"] for column in inspect(engine).get_columns(table.name)}
    added = [column for column in table.columns if column.name not in present]
    for column in added:
        assert column.nullable, f"{table.name}.{column.name} cannot be added to existing rows"
        quote = engine.dialect.identifier_preparer.quote
        statement = (f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} "
                     f"{column.type.compile(dialect=engine.dialect)}")
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except (OperationalError, ProgrammingError):
            if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                raise
    return [column.name for column in added]


def _sqlite_durable(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
