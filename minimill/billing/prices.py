"""The price book, the cost model behind its defaults, and exact costs of requests and storage.

Prices are USD per 1M tokens (per 1M token-hours for kept KV), held as `Decimal` so that a bill is
the exact product of counted tokens and listed prices, never a float rounding of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

MILLION = Decimal(1_000_000)
GIB = 1 << 30
# Costs are kept to 1e-18 USD, the scale of the ledger's NUMERIC(38, 18) column. Without this a storage
# cost (token-seconds / 3600) has 28 significant digits: SQLite's text column kept them all while
# PostgreSQL rounded, so the same bill read back differently per backend and differed from the one returned.
MONEY_QUANTUM = Decimal("1e-18")


def _price(value: float | Decimal) -> Decimal:
    """A price rounded to 6 significant digits, so listed prices are short exact decimals."""
    return Decimal(f"{float(value):.6g}")


@dataclass(frozen=True, slots=True)
class Prices:
    """One model's prices: USD per 1M tokens, or per 1M token-hours for cache storage and sessions."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_storage: Decimal
    session_retention: Decimal
    batch_discount: Decimal = Decimal("0.5")

    def as_dict(self) -> dict[str, float]:
        """Floats for JSON."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class CostModel:
    """Where default prices come from: what the machine costs per hour and what it does per hour.

    The throughputs are SmolLM2-135M on a 2-vCPU VM (bench/RESULTS.md: ~150 tok/s decoding 8
    streams, ~1,500 tok/s prefill). Kept KV is priced by what holds it (bf16: 23,053 bytes per
    token for SmolLM2-135M): a session's by RAM, a prompt cache's by disk, where it lives between uses.
    """

    hardware_usd_per_hour: float = 0.10
    prefill_tokens_per_second: float = 1500.0
    decode_tokens_per_second: float = 150.0
    kv_bytes_per_token: int = 23_053
    ram_usd_per_gib_hour: float = 0.005
    disk_usd_per_gib_hour: float = 0.00014  # NVMe at about $0.10 per GiB-month
    margin: float = 1.5
    cached_fraction: float = 0.1
    batch_discount: float = 0.5

    def prices(self) -> Prices:
        """Prices that cover the hardware at the measured rates, times the margin."""
        def per_million(tokens_per_second: float) -> float:
            return self.hardware_usd_per_hour / (tokens_per_second * 3600) * 1e6 * self.margin

        gib_per_million = self.kv_bytes_per_token * 1e6 / GIB * self.margin
        input_price = per_million(self.prefill_tokens_per_second)
        return Prices(input=_price(input_price), cached_input=_price(input_price * self.cached_fraction),
                      output=_price(per_million(self.decode_tokens_per_second)),
                      cache_storage=_price(gib_per_million * self.disk_usd_per_gib_hour),
                      session_retention=_price(gib_per_million * self.ram_usd_per_gib_hour),
                      batch_discount=_price(self.batch_discount))


class PriceBook:
    """Prices per model: a default for every model plus overrides by model id."""

    def __init__(self, default: Prices, overrides: Mapping[str, Prices] | None = None) -> None:
        self.default = default
        self.overrides = dict(overrides or {})

    def for_model(self, model: str) -> Prices:
        """The prices that apply to `model`."""
        return self.overrides.get(model, self.default)

    def as_dict(self, models: list[str]) -> dict[str, dict[str, float]]:
        """Each model's prices, for `GET /v1/prices`."""
        return {model: self.for_model(model).as_dict() for model in models}


ZERO = Decimal(0)


def money(value: Decimal) -> Decimal:
    """`value` USD at the ledger's scale (1e-18), rounded half-even; exact products are unchanged."""
    # 38 digits, as the column: the default context (28) would refuse sums above 1e10 USD at this scale.
    return value.quantize(MONEY_QUANTUM, context=Context(prec=38, rounding=ROUND_HALF_EVEN)).normalize()


@dataclass(frozen=True, slots=True)
class Cost:
    """What one billable event costs, in USD, by class."""

    input: Decimal = ZERO
    cached_input: Decimal = ZERO
    output: Decimal = ZERO
    cache_storage: Decimal = ZERO
    session_retention: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        """Sum of every class."""
        return self.input + self.cached_input + self.output + self.cache_storage + self.session_retention

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, float]:
        """Floats in USD, with the total."""
        out = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        out["total"] = float(self.total)
        return out


def request_cost(prices: Prices, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int,
                 batch: bool = False) -> Cost:
    """Uncached prompt tokens at the input price, cached ones at the cached price, output at output."""
    factor = prices.batch_discount if batch else Decimal(1)
    return Cost(input=money((prompt_tokens - cached_tokens) * prices.input * factor / MILLION),
                cached_input=money(cached_tokens * prices.cached_input * factor / MILLION),
                output=money(completion_tokens * prices.output * factor / MILLION))


def storage_cost(prices: Prices, *, tokens: int, seconds: float, kind: Literal["cache", "session"]) -> Cost:
    """Keeping `tokens` of KV for `seconds`: a prompt cache's storage or a session's retention."""
    token_hours = tokens * Decimal(str(seconds)) / 3600
    if kind == "cache":
        return Cost(cache_storage=money(token_hours * prices.cache_storage / MILLION))
    return Cost(session_retention=money(token_hours * prices.session_retention / MILLION))
