"""A tenant's activity read back from the ledger, for the console: the request log (filtered, paged in
SQL), each cache's hits and storage, live chat sessions, and what the same traffic would have cost
without prefix reuse, caches and sessions. Read-only; money is summed as Decimal in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select

from minimill.billing.ledger import Ledger, LedgerEntry, day_of, entry_of
from minimill.billing.ledger import ledger as table
from minimill.billing.prices import MILLION, PriceBook, Prices, money
from minimill.errors import InvalidRequest, NotFound

EXACT = Context(prec=38)  # the ledger's precision: a ratio of prices must not round a cost at 28 digits


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which rows of the request log to show: one model, one kind, `since <= created_at < until`."""

    model: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class RequestPage:
    """One page of a tenant's request log, newest first, and how many rows the filter matches in all."""

    entries: list[LedgerEntry]
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        """Rows follow this page."""
        return self.offset + len(self.entries) < self.total

    @property
    def has_previous(self) -> bool:
        """Rows precede this page."""
        return self.offset > 0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A prompt cache as billed to its tenant: requests that named it, and its storage (creation plus extensions)."""

    hits: int
    storage_cost: Decimal


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live chat session: its requests, the KV its latest request kept and until when, what keeping cost."""

    session: str
    model: str
    requests: int
    kept_tokens: int
    kept_until: float
    last_at: float
    retention_cost: Decimal


@dataclass(frozen=True, slots=True)
class SavingsRow:
    """One day and model: what was billed, and what the same requests would have cost with no reuse at all."""

    day: str
    model: str
    actual: Decimal
    without_reuse: Decimal

    @property
    def saved(self) -> Decimal:
        """What reuse saved."""
        return self.without_reuse - self.actual


def cost_without_reuse(entry: LedgerEntry, prices: Prices) -> Decimal:
    """What a request row would have cost with every prompt token at the full input price and no session kept;
    0 for a cache's creation or extension (with no caches, it would not exist).

    The cached part is re-priced by the ratio input / cached_input of the model's prices, so a batch line's
    discount carries over; with a free cached price, by the token count at the list input price.
    """
    if entry.kind.startswith("cache."):
        return Decimal(0)
    cost = entry.cost
    if prices.cached_input > 0:
        cached_at_full = EXACT.divide(EXACT.multiply(cost.cached_input, prices.input), prices.cached_input)
    else:
        cached_at_full = entry.cached_tokens * prices.input / MILLION
    return money(cost.input + cost.output + cached_at_full)


def _where(tenant: str, chosen: RequestFilter) -> list[ColumnElement[bool]]:
    """The SQL conditions of a tenant's filtered request log."""
    conditions = [table.c.tenant == tenant]
    if chosen.model is not None:
        conditions.append(table.c.model == chosen.model)
    if chosen.kind is not None:
        conditions.append(table.c.kind == chosen.kind)
    if chosen.since is not None:
        conditions.append(table.c.created_at >= chosen.since)
    if chosen.until is not None:
        conditions.append(table.c.created_at < chosen.until)
    return conditions


def _billed_cache(bill_id: str, cache_ids: list[str]) -> str:
    """Which of `cache_ids` a `<cache_id>:...` bill is for (the longest that matches, should one id prefix another)."""
    return max((c for c in cache_ids if bill_id.startswith(f"{c}:")), key=len)


class Activity:
    """Read-only queries over the ledger's tables, always for one tenant."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _rows(self, query: Select[Any]) -> list[LedgerEntry]:
        with self.ledger.engine.connect() as conn:
            return [entry_of(row) for row in conn.execute(query).mappings()]

    def requests(self, tenant: str, filter: RequestFilter, *, limit: int, offset: int) -> RequestPage:
        """The page of the tenant's rows that `filter` matches, newest first (ties by id), `offset` rows in;
        counted and cut in SQL. InvalidRequest if `limit` < 1 or `offset` < 0."""
        if limit < 1 or offset < 0:
            raise InvalidRequest("limit must be at least 1 and offset at least 0", param="limit" if limit < 1
                                 else "offset")
        where = _where(tenant, filter)
        page = (select(table).where(*where).order_by(table.c.created_at.desc(), table.c.id.desc())
                .limit(limit).offset(offset))
        with self.ledger.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        return RequestPage(entries=self._rows(page), total=total, offset=offset, limit=limit)

    def request(self, tenant: str, entry_id: str) -> LedgerEntry:
        """One of the tenant's rows; NotFound when unknown or another tenant's (which it does not reveal)."""
        rows = self._rows(select(table).where(table.c.tenant == tenant, table.c.id == entry_id))
        if not rows:
            raise NotFound(f"no request '{entry_id}'", param="id")
        return rows[0]

    def facets(self, tenant: str) -> tuple[list[str], list[str]]:
        """The distinct models and kinds the tenant has rows for, each sorted (for filter choices)."""
        with self.ledger.engine.connect() as conn:
            models = conn.execute(select(table.c.model).where(table.c.tenant == tenant).distinct()
                                  .order_by(table.c.model)).scalars().all()
            kinds = conn.execute(select(table.c.kind).where(table.c.tenant == tenant).distinct()
                                 .order_by(table.c.kind)).scalars().all()
        return list(models), list(kinds)

    def cache_stats(self, tenant: str, cache_ids: Iterable[str]) -> dict[str, CacheStats]:
        """For each of `cache_ids`: the tenant's rows that named it (hits), and the storage the tenant was billed
        for it (its `cache.*` rows, ids `<cache_id>:create` and `<cache_id>:extend:<time>`)."""
        wanted = list(dict.fromkeys(cache_ids))
        if not wanted:
            return {}
        with self.ledger.engine.connect() as conn:
            hits: dict[str, int] = dict(conn.execute(select(table.c.cache_id, func.count()).where(
                table.c.tenant == tenant, table.c.cache_id.in_(wanted)).group_by(table.c.cache_id)).all())
            bills = conn.execute(select(table.c.id, table.c.cost_cache_storage).where(
                table.c.tenant == tenant, table.c.kind.startswith("cache."),
                or_(*(table.c.id.startswith(f"{cache_id}:", autoescape=True) for cache_id in wanted)))).all()
        storage = dict.fromkeys(wanted, Decimal(0))
        for bill_id, cost in bills:
            storage[_billed_cache(bill_id, wanted)] += cost
        return {cache_id: CacheStats(hits=hits.get(cache_id, 0), storage_cost=storage[cache_id])
                for cache_id in wanted}

    def sessions(self, tenant: str, now: float) -> list[SessionRow]:
        """The tenant's sessions whose latest request keeps KV past `now`, most recently used first; the kept
        tokens and time are the latest request's, the counts and retention cost over all its requests."""
        live = select(table.c.session).where(table.c.tenant == tenant, table.c.kept_until > now)
        rows = self._rows(select(table).where(table.c.tenant == tenant, table.c.session.in_(live))
                          .order_by(table.c.created_at, table.c.id))
        found: dict[str, SessionRow] = {}
        for entry in rows:
            assert entry.session is not None  # chosen by the query
            before = found.get(entry.session)
            found[entry.session] = SessionRow(
                session=entry.session, model=entry.model, requests=(before.requests if before else 0) + 1,
                kept_tokens=entry.kept_tokens, kept_until=entry.kept_until or 0.0, last_at=entry.created_at,
                retention_cost=(before.retention_cost if before else Decimal(0)) + entry.cost.session_retention)
        alive = [row for row in found.values() if row.kept_until > now]
        return sorted(alive, key=lambda row: row.last_at, reverse=True)

    def savings(self, tenant: str, prices: PriceBook) -> list[SavingsRow]:
        """Per day and model (in that order): the tenant's billed total and `cost_without_reuse` summed."""
        rows = self._rows(select(table).where(table.c.tenant == tenant).order_by(table.c.day, table.c.model))
        totals: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for entry in rows:
            key = (day_of(entry.created_at), entry.model)
            actual, without = totals.get(key, (Decimal(0), Decimal(0)))
            totals[key] = (actual + entry.cost.total,
                           without + cost_without_reuse(entry, prices.for_model(entry.model)))
        return [SavingsRow(day=day, model=model, actual=actual, without_reuse=without)
                for (day, model), (actual, without) in totals.items()]

