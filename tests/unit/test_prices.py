"""Prices from the cost model and exact costs, by hand."""

from __future__ import annotations

from decimal import Decimal

from minimill.billing.prices import Cost, CostModel, PriceBook, Prices, money, request_cost, storage_cost

PRICES = Prices(input=Decimal("0.03"), cached_input=Decimal("0.003"), output=Decimal("0.3"),
                cache_storage=Decimal("0.005"), session_retention=Decimal("0.2"))


def test_cost_model_divides_hardware_by_throughput_times_margin() -> None:
    prices = CostModel(hardware_usd_per_hour=0.36, prefill_tokens_per_second=1000, decode_tokens_per_second=100,
                       margin=2.0, cached_fraction=0.1).prices()
    # $0.36/h over 3.6M prefill tokens/h = $0.10 per 1M, x2 margin; decode is 10x slower
    assert prices.input == Decimal("0.2") and prices.output == Decimal("2")
    assert prices.cached_input == Decimal("0.02")
    assert prices.cache_storage < prices.session_retention  # disk is cheaper than RAM


def test_request_cost_is_exact() -> None:
    cost = request_cost(PRICES, prompt_tokens=1050, cached_tokens=1000, completion_tokens=20)
    assert cost.input == Decimal("0.0000015")  # 50 x 0.03 / 1e6
    assert cost.cached_input == Decimal("0.000003")  # 1000 x 0.003 / 1e6
    assert cost.output == Decimal("0.000006")
    assert cost.total == Decimal("0.0000105")
    uncached = request_cost(PRICES, prompt_tokens=1050, cached_tokens=0, completion_tokens=20)
    assert uncached.input + uncached.cached_input > 5 * (cost.input + cost.cached_input)


def test_batch_discount_halves_everything() -> None:
    full = request_cost(PRICES, prompt_tokens=100, cached_tokens=40, completion_tokens=10)
    batch = request_cost(PRICES, prompt_tokens=100, cached_tokens=40, completion_tokens=10, batch=True)
    assert batch.total * 2 == full.total


def test_storage_and_retention() -> None:
    cache = storage_cost(PRICES, tokens=1000, seconds=3600, kind="cache")
    assert cache == Cost(cache_storage=Decimal("0.000005"))
    session = storage_cost(PRICES, tokens=600, seconds=15, kind="session")
    assert session.session_retention == Decimal(600) * Decimal(15) / 3600 * Decimal("0.2") / 1_000_000
    assert (cache + session).total == cache.total + session.total
    assert set((cache + session).as_dict()) == {"input", "cached_input", "output", "cache_storage",
                                                "session_retention", "total"}


def test_price_book_overrides_per_model() -> None:
    cheap = Prices(input=Decimal("0.01"), cached_input=Decimal("0.001"), output=Decimal("0.1"),
                   cache_storage=Decimal("0.001"), session_retention=Decimal("0.1"))
    book = PriceBook(PRICES, {"small": cheap})
    assert book.for_model("small") is cheap and book.for_model("other") is PRICES
    assert book.as_dict(["small"])["small"]["input"] == 0.01


def test_default_cost_model_by_hand() -> None:
    prices = CostModel().prices()
    # $0.10/h / (1,500 tok/s x 3,600 s) x 1e6 x 1.5 = $0.02777... per 1M prompt tokens, 6 significant digits
    assert prices.input == Decimal("0.0277778") and prices.output == Decimal("0.277778")
    assert prices.cached_input == Decimal("0.00277778")
    # 23,053 B/token x 1e6 / 2^30 = 21.47 GiB per 1M tokens, x $0.005/GiB-h (RAM) x 1.5
    assert prices.session_retention == Decimal("0.161023")


def test_costs_are_kept_to_the_ledger_scale() -> None:
    # 1 token-second = 1/3600 token-hours: a repeating decimal, cut at 1e-18 USD as the ledger stores it
    cost = storage_cost(PRICES, tokens=1, seconds=1, kind="session")
    assert cost.session_retention == Decimal("0.000000000055555556")  # 0.2 / 3600 / 1e6 = 5.5555...e-11
    assert money(Decimal("1e-19") * 6) == Decimal("1E-18")
    assert money(Decimal("12345678901.5")) == Decimal("12345678901.5")  # beyond the default 28 digits at 1e-18
