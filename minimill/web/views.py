"""What each console page shows, as plain data for its template: one function a page, `(runtime, tenant) ->
context`, reading the runtime's ledger, caches, batches and scoreboard (blocking: routes run them off the
event loop). Every value a tenant sent (prompts, ids, metadata) reaches the HTML only through Jinja's
autoescaping or as JSON data for a chart, never as markup."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from minimill.batch.store import UNFINISHED
from minimill.billing.activity import RequestFilter, SavingsRow
from minimill.billing.ledger import LedgerEntry
from minimill.errors import InvalidRequest, NotFound
from minimill.runtime import Runtime

PAGES = (("playground", "Playground"), ("requests", "Requests"), ("usage", "Usage and savings"),
         ("caches", "Caches and sessions"), ("batches", "Batches"), ("models", "Models"))


# ---- formatting (Jinja filters) ---------------------------------------------------------------------------
def usd(value: Decimal | float | None) -> str:
    """Dollars with six significant digits (a request costs a millionth of a dollar or so); '—' for none."""
    if value is None:
        return "—"
    amount = Decimal(str(value))
    sign, amount = ("-" if amount < 0 else ""), abs(amount)  # -$0.5, not $-0.5
    if amount >= 1:
        return f"{sign}${amount:,.4f}"
    return f"{sign}$" + format(Decimal(f"{amount:.6g}").normalize(), "f")  # 0.000200000 reads as $0.0002


def when(timestamp: float | None) -> str:
    """A unix time as UTC, to the second."""
    return "—" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def share(part: float, whole: float) -> str:
    """`part` as a percentage of `whole` ('—' when the whole is nothing)."""
    return "—" if not whole else f"{100 * part / whole:.0f}%"


def seconds(value: float | None) -> str:
    """A duration, in the largest unit that reads well."""
    if value is None:
        return "—"
    value = max(0.0, value)
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


# ---- playground -------------------------------------------------------------------------------------------
def playground(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """Every model the playground can ask: `default` and `auto` with what they mean, then each served one."""
    default = runtime.router.default()
    choices = [{"id": "default", "label": f"default ({default.model})", "reason": default.reason},
               {"id": "auto", "label": "auto (router)",
                "reason": "the cheapest served model expected to pass, escalating when its answer fails the check"}]
    for model in runtime.model_ids:
        spec = runtime.specs.get(model)
        choices.append({"id": model, "label": model,
                        "reason": spec.description if spec else "an upstream OpenAI-compatible model"})
    return {"title": "Playground", "models": choices}


# ---- requests ---------------------------------------------------------------------------------------------
PAGE_SIZES = (1, 200)  # rows a page of the request log may have
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer: a larger OFFSET does not bind
SECONDS_PER_DAY = 86_400


def _day(text: str | None, param: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{param} must be a date as YYYY-MM-DD, not {text[:40]!r}", param=param) from None


def _whole(text: str | None, param: str, *, default: int, low: int, high: int) -> int:
    """A query string's whole number in [low, high]; InvalidRequest (a 400 page) for anything else."""
    if not text:
        return default
    refused = InvalidRequest(f"{param} must be a whole number from {low} to {high}, not {text[:40]!r}", param=param)
    try:
        value = int(text)
    except ValueError:  # not a number, or more digits than int() reads
        raise refused from None
    if not low <= value <= high:
        raise refused
    return value


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """The request log's filters (UTC days, both ends included) and page."""

    model: str | None
    kind: str | None
    since: date | None
    until: date | None
    offset: int
    limit: int

    @classmethod
    def parse(cls, *, model: str | None, kind: str | None, since: str | None, until: str | None,
              offset: str | None, limit: str | None) -> RequestQuery:
        """From the page's query string, as sent (a link may carry anything); empty fields mean no filter.
        InvalidRequest for a date that is not one or a page outside what the ledger can cut."""
        low, high = PAGE_SIZES
        return cls(model or None, kind or None, _day(since, "since"), _day(until, "until"),
                   _whole(offset, "offset", default=0, low=0, high=MAX_OFFSET),
                   _whole(limit, "limit", default=25, low=low, high=high))

    @property
    def filtered(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None for v in (self.model, self.kind, self.since, self.until))

    def filter(self) -> RequestFilter:
        """The ledger query: from the start of `since` to the end of `until` (9999-12-31 included: no date
        arithmetic past it)."""
        return RequestFilter(model=self.model, kind=self.kind,
                             since=_epoch(self.since) if self.since else None,
                             until=_epoch(self.until) + SECONDS_PER_DAY if self.until else None)

    def link(self, offset: int) -> str:
        """The URL of the same filters at another offset."""
        given = {"model": self.model, "kind": self.kind, "since": self.since and self.since.isoformat(),
                 "until": self.until and self.until.isoformat(), "limit": self.limit, "offset": offset}
        return "/console/requests?" + urlencode({k: v for k, v in given.items() if v not in (None, "")})


def _row(entry: LedgerEntry) -> dict[str, Any]:
    return {"id": entry.id, "created_at": entry.created_at, "model": entry.model, "kind": entry.kind,
            "prompt_tokens": entry.prompt_tokens, "cached_tokens": entry.cached_tokens,
            "completion_tokens": entry.completion_tokens, "latency_ms": entry.latency_ms, "cost": entry.cost.total}


def _choices(known: list[str], chosen: str | None) -> list[str]:
    """A filter's options: the values the tenant's rows have, and the chosen one even when none has it (a link
    may name any), so the form shows the filter that is applied."""
    return known if chosen is None or chosen in known else [*known, chosen]


def requests(runtime: Runtime, tenant: str, query: RequestQuery) -> dict[str, Any]:
    """One page of the tenant's requests, newest first, with the filters' choices and the pages around it."""
    page = runtime.activity.requests(tenant, query.filter(), limit=query.limit, offset=query.offset)
    models, kinds = runtime.activity.facets(tenant)
    return {"title": "Requests", "rows": [_row(e) for e in page.entries], "total": page.total, "query": query,
            "models": _choices(models, query.model), "kinds": _choices(kinds, query.kind),
            "first": page.offset + 1 if page.entries else 0, "last": page.offset + len(page.entries),
            "start": query.link(0) if query.offset else None,
            "previous": query.link(max(0, page.offset - page.limit)) if page.has_previous else None,
            "next": query.link(page.offset + page.limit) if page.has_next else None}


def request_detail(runtime: Runtime, tenant: str, entry_id: str) -> dict[str, Any]:
    """Everything the ledger holds about one of the tenant's requests."""
    entry = runtime.activity.request(tenant, entry_id)
    return {"title": f"Request {entry.id}", "entry": entry, "cost": entry.cost.as_dict()}


def missing(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """A console path that names no page."""
    raise NotFound("There is no such page in the console.")


# ---- usage and savings ------------------------------------------------------------------------------------
def usage(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """Per day and model, the tenant's tokens (a usage row) and cost with and without reuse (a savings row);
    the totals and the charts' data."""
    saved = {(s.day, s.model): s for s in runtime.activity.savings(tenant, runtime.meter.prices)}
    lines = [(row, saved.get((row.day, row.model)) or SavingsRow(row.day, row.model, row.cost.total, row.cost.total))
             for row in runtime.meter.usage(tenant)]
    cost = sum((s.actual for _, s in lines), Decimal(0))
    without = sum((s.without_reuse for _, s in lines), Decimal(0))
    return {"title": "Usage and savings", "rows": lines, "cost": cost, "without": without, "saved": without - cost,
            "chart": _usage_chart([s for _, s in lines])}


def _usage_chart(lines: list[SavingsRow]) -> dict[str, Any]:
    days = sorted({line.day for line in lines})
    per_model: dict[str, dict[str, float]] = defaultdict(dict)
    actual: dict[str, float] = defaultdict(float)
    without: dict[str, float] = defaultdict(float)
    for line in lines:
        per_model[line.model][line.day] = float(line.actual)
        actual[line.day] += float(line.actual)
        without[line.day] += float(line.without_reuse)
    return {"days": days,
            "by_model": [{"label": m, "data": [costs.get(d, 0.0) for d in days]} for m, costs in per_model.items()],
            "models": {m: sum(costs.values()) for m, costs in per_model.items()},
            "actual": [actual[d] for d in days], "without": [without[d] for d in days]}


# ---- caches and sessions ----------------------------------------------------------------------------------
def caches(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """Live caches (with where their KV is, hits and storage cost) and live chat sessions."""
    now = time.time()
    records = runtime.caches.list(tenant)
    stats = runtime.activity.cache_stats(tenant, [r.id for r in records])
    rows = []
    for record in records:
        found = stats.get(record.id)
        rows.append({"id": record.id, "model": record.model, "tokens": len(record.tokens),
                     "tier": runtime.engine_for(record.model).tier_of(record.kv_name) or "none",
                     "ttl_left": record.expires_at - now, "hits": found.hits if found else 0,
                     "storage_cost": found.storage_cost if found else Decimal(0),
                     "own": record.tenant == tenant, "shared": record.shared})
    sessions = [{"session": s.session, "model": s.model, "requests": s.requests, "kept_tokens": s.kept_tokens,
                 "ttl_left": s.kept_until - now, "last_at": s.last_at, "retention_cost": s.retention_cost}
                for s in runtime.activity.sessions(tenant, now)]
    return {"title": "Caches and sessions", "caches": rows, "sessions": sessions, "models": [*runtime.engines],
            "default_ttl": runtime.config.caches.default_cache_ttl}


# ---- batches ----------------------------------------------------------------------------------------------
def batches(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """The tenant's newest batches with progress, counts, cost and result files."""
    rows = []
    for record in runtime.batches.page(tenant, limit=50):
        totals = runtime.batches.totals(record)
        done = totals.completed + totals.failed
        rows.append({"id": record.id, "status": record.status, "created_at": record.created_at,
                     "endpoint": record.endpoint, "total": record.total, "completed": totals.completed,
                     "failed": totals.failed, "done": done, "cost": totals.cost.total,
                     "output_file_id": record.output_file_id, "error_file_id": record.error_file_id,
                     "unfinished": record.status in UNFINISHED})
    return {"title": "Batches", "rows": rows, "polling": any(r["unfinished"] for r in rows)}


# ---- models -----------------------------------------------------------------------------------------------
def models(runtime: Runtime, tenant: str) -> dict[str, Any]:
    """The scoreboard of the served models (quality, cost, intervals per suite), the default and why, and
    each model's prices."""
    board, default = runtime.router.scoreboard(), runtime.router.default()
    cards = []
    for model in runtime.model_ids:
        score = board.models.get(model)
        cards.append({"id": model, "default": model == default.model,
                      "quality": score.quality if score and score.suites else None,
                      "cost_per_1k": 1000 * score.cost_per_item if score and score.suites else None,
                      "latency_s": score.latency_s if score and score.suites else None,
                      "prices": runtime.meter.prices.for_model(model).as_dict()})
    suites = sorted({name for score in board.models.values() for name in score.suites})
    capability = [{"suite": suite, "scores": {
        model: {"accuracy": s.accuracy, "low": s.ci_low, "high": s.ci_high, "n": s.n}
        for model, score in board.models.items() if (s := score.suites.get(suite)) is not None}}
        for suite in suites]
    points = [{"label": model, "x": 1000 * score.cost_per_item, "y": score.quality, "default": model == default.model}
              for model, score in board.models.items() if score.suites and math.isfinite(score.cost_per_item)]
    return {"title": "Models", "cards": cards, "default": default, "capability": capability, "points": points,
            "board_models": [m for m in runtime.model_ids if m in board.models]}
