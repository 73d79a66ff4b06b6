"""Composition root: builds every long-lived object once; `serve` and tests both use it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from minimill.batch.files import FileStore
from minimill.batch.store import BatchStore
from minimill.billing.ledger import Ledger
from minimill.billing.meter import Meter
from minimill.billing.prices import CostModel, PriceBook
from minimill.config import BillingConfig, Config
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.errors import NotFound
from minimill.kv.caches import Caches
from minimill.kv.tiers import TierLimits, TierStore
from minimill.metrics import Metrics
from minimill.models.catalogue import ModelSpec, resolve
from minimill.models.fingerprint import file_digest


def price_book(billing: BillingConfig) -> PriceBook:
    """Prices from the cost model, with any price the config sets explicitly."""
    prices = CostModel(hardware_usd_per_hour=billing.hardware_usd_per_hour, margin=billing.margin).prices()
    given = {name: Decimal(str(value)) for name in ("input", "cached_input", "output", "cache_storage",
                                                     "session_retention", "batch_discount")
             if (value := getattr(billing, f"price_{name}")) is not None}
    return PriceBook(replace(prices, **given) if given else prices)


@dataclass(slots=True)
class Runtime:
    """The served models (first = default), their metrics, the meter and ledger, the prompt caches,
    the stored files and batches, and the config they were built from."""

    config: Config
    engines: dict[str, Engine]
    specs: dict[str, ModelSpec]
    metrics: Metrics
    meter: Meter
    caches: Caches
    files: FileStore
    batches: BatchStore

    @classmethod
    def build(cls, config: Config) -> Runtime:
        """Open the ledger, load every configured model and start its engine."""
        metrics = Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(config.billing.ledger_url or f"sqlite:///{config.data_dir.resolve() / 'ledger.sqlite3'}")
        engines: dict[str, Engine] = {}
        specs: dict[str, ModelSpec] = {}
        try:
            for name in config.models:
                spec = resolve(name, config.data_dir)
                engines[spec.id] = Engine(spec.id, LlamaModel(spec.path), config.engine, metrics,
                                          _tiers(config, spec))
                specs[spec.id] = spec
        except Exception:
            for engine in engines.values():
                engine.close()
            ledger.close()
            raise
        meter = Meter(ledger, price_book(config.billing))
        return cls(config=config, engines=engines, specs=specs, metrics=metrics, meter=meter,
                   caches=Caches(engines, meter, config.caches),
                   files=FileStore(ledger, config.data_dir / "files", config.batch.max_file_bytes),
                   batches=BatchStore(ledger))

    @property
    def default_model(self) -> str:
        """The id served when a client asks for the first configured model."""
        return next(iter(self.engines))

    def engine_for(self, model: str) -> Engine:
        """The engine serving `model`; NotFound for an id that is not served."""
        engine = self.engines.get(model)
        if engine is None:
            served = ", ".join(self.engines)
            raise NotFound(f"The model '{model}' does not exist or is not served here (served: {served})",
                           param="model", code="model_not_found")
        return engine

    def close(self) -> None:
        """Stop every engine and free its memory."""
        for engine in self.engines.values():
            engine.close()
            engine.model.close()
        self.meter.ledger.close()


def _tiers(config: Config, spec: ModelSpec) -> TierStore:
    """A model's RAM and disk tiers; files are only valid for this exact model file and KV type."""
    digest = file_digest(spec.path, config.data_dir / "fingerprints")
    kv_type = config.engine.kv_type
    directory = config.data_dir / "kv" / f"{spec.id}-{digest[:16]}-{kv_type}"
    limits = TierLimits(ram_bytes=config.engine.ram_tier_bytes, disk_bytes=config.engine.disk_tier_bytes)
    return TierStore(f"{digest}:{kv_type}", directory, limits)
