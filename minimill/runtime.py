"""Composition root: builds every long-lived object once; `serve` and tests both use it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from minimill.batch.files import FileStore
from minimill.batch.store import BatchStore
from minimill.billing.activity import Activity
from minimill.billing.ledger import Ledger
from minimill.billing.meter import Meter
from minimill.billing.prices import CostModel, PriceBook, Prices
from minimill.billing.throughput import Throughput, ThroughputStore, measured
from minimill.config import BillingConfig, Config, UpstreamSpec
from minimill.engine.client import EngineClient
from minimill.engine.grammar import GrammarGuard, GrammarProbe
from minimill.engine.llama import LlamaModel
from minimill.engine.protocol import EngineSpec
from minimill.engine.selftest import engine_build
from minimill.errors import InvalidRequest, NotFound
from minimill.evals.results import ResultStore
from minimill.kv.caches import Caches
from minimill.kv.tiers import TierLimits
from minimill.metrics import Metrics
from minimill.models.catalogue import ModelSpec, resolve
from minimill.models.fingerprint import file_digest, system_fingerprint
from minimill.router.policy import Router
from minimill.router.upstream import Upstream


def price_book(billing: BillingConfig, throughput: dict[str, Throughput] | None = None,
               upstreams: tuple[UpstreamSpec, ...] = ()) -> PriceBook:
    """Prices from the cost model: a local model's from its own measured throughput on this hardware
    (`throughput`, see `minimill calibrate`), with any price the config sets explicitly; an upstream's from
    its spec. A model never measured gets the cost model's reference rates."""
    model = CostModel(hardware_usd_per_hour=billing.hardware_usd_per_hour, margin=billing.margin)

    def measured_model(found: Throughput) -> CostModel:
        return replace(model, prefill_tokens_per_second=found.prefill_tokens_per_second,
                       decode_tokens_per_second=found.decode_tokens_per_second,
                       kv_bytes_per_token=found.kv_bytes_per_token)

    def configured(prices: Prices, source: object) -> Prices:
        given = {name: Decimal(str(value)) for name in ("input", "cached_input", "output", "cache_storage",
                                                         "session_retention", "batch_discount")
                 if (value := getattr(source, f"price_{name}", None)) is not None}
        return replace(prices, **given) if given else prices

    default = configured(model.prices(), billing)
    overrides = {name: configured(measured_model(found).prices(), billing)
                 for name, found in (throughput or {}).items()}
    for spec in upstreams:
        prices = configured(default, spec)
        if spec.price_input is not None and spec.price_cached_input is None:  # no discount known: full price
            prices = replace(prices, cached_input=prices.input)
        overrides[spec.name] = prices
    return PriceBook(default, overrides)


@dataclass(slots=True)
class Runtime:
    """The served models (local engines and upstream endpoints), the router that picks among them, their
    metrics, the meter and ledger (and the console's reading of it), the prompt caches, the stored files and
    batches, and the config they were built from."""

    config: Config
    engines: dict[str, EngineClient]
    specs: dict[str, ModelSpec]
    metrics: Metrics
    meter: Meter
    caches: Caches
    files: FileStore
    batches: BatchStore
    upstreams: dict[str, Upstream]
    router: Router
    grammars: dict[str, GrammarGuard]
    activity: Activity

    @classmethod
    def build(cls, config: Config) -> Runtime:
        """Open the ledger, load every configured model and start its engine."""
        metrics = Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(config.billing.ledger_url or f"sqlite:///{config.data_dir.resolve() / 'ledger.sqlite3'}")
        engines: dict[str, EngineClient] = {}
        specs: dict[str, ModelSpec] = {}
        vocabularies: dict[str, LlamaModel] = {}
        try:
            for name in config.models:
                spec = resolve(name, config.data_dir)
                specs[spec.id] = spec
                vocabularies[spec.id] = LlamaModel(spec.path, vocab_only=True)
            drafts = _drafts_for(config, vocabularies)
            for model_id, spec in specs.items():
                engine_spec = replace(_engine_spec(config, spec), draft_model_path=drafts.get(model_id))
                engines[model_id] = EngineClient(engine_spec, vocabularies[model_id], metrics,
                                                 log_level=logging.getLogger().getEffectiveLevel())
            upstreams = {spec.name: Upstream(spec) for spec in config.routing.upstreams}
            _check_names(config, [*engines], [*upstreams])
        except Exception:
            for engine in engines.values():
                engine.close()
            for vocabulary in vocabularies.values():
                vocabulary.close()
            ledger.close()
            raise
        measurements = ThroughputStore(config.data_dir / "throughput.json")
        rates = {name: found for name, spec in specs.items()
                 if (found := measured(_digest(config, spec), measurements)) is not None}
        prices = price_book(config.billing, rates, config.routing.upstreams)
        meter = Meter(ledger, prices)

        def list_price(model: str) -> float:
            book = prices.for_model(model)
            return float(book.input + book.output)

        router = Router(ResultStore(config.data_dir / "evals" / "results"), config.routing,
                        [*engines, *upstreams], list_price)
        grammars = {name: GrammarGuard(config.limits, GrammarProbe(engine.model.path), engine.grammar_from_json_schema)
                    for name, engine in engines.items()}
        return cls(config=config, engines=engines, specs=specs, metrics=metrics, meter=meter,
                   caches=Caches(engines, meter, config.caches),
                   files=FileStore(ledger, config.data_dir / "files", config.batch.max_file_bytes),
                   batches=BatchStore(ledger), upstreams=upstreams, router=router, grammars=grammars,
                   activity=Activity(ledger))

    @property
    def default_model(self) -> str:
        """The id `model: "default"` resolves to: the scoreboard's best value (see Router.default)."""
        return self.router.default().model

    @property
    def model_ids(self) -> list[str]:
        """Every served model id: local engines first, then upstreams."""
        return [*self.engines, *self.upstreams]

    def resolve(self, model: str) -> str:
        """A requested model id with `default` resolved; NotFound for an id that is not served ("auto" is
        returned as is: the router picks per request)."""
        if model == "default":
            return self.default_model
        if model == "auto" or model in self.engines or model in self.upstreams:
            return model
        raise NotFound(f"The model '{model}' does not exist or is not served here (served: "
                       f"{', '.join([*self.model_ids, 'default', 'auto'])})", param="model", code="model_not_found")

    def engine_for(self, model: str) -> EngineClient:
        """The local engine serving `model` ("default" resolved). InvalidRequest for "auto" or an upstream
        model (what needs an engine, such as prompt caches and batches, works with local models only);
        NotFound for an id that is not served at all."""
        name = self.resolve(model) if model == "default" else model
        engine = self.engines.get(name)
        if engine is None:
            local = ", ".join(self.engines)
            if name == "auto" or name in self.upstreams:
                raise InvalidRequest(f"The model '{model}' is not a local model: this works with the models served "
                                     f"here ({local})", param="model", code="model_not_supported")
            raise NotFound(f"The model '{model}' does not exist or is not served here (served: {local})",
                           param="model", code="model_not_found")
        return engine

    def close(self) -> None:
        """Stop every engine and free its memory."""
        for engine in self.engines.values():
            engine.close()
            engine.model.close()
        for guard in self.grammars.values():
            guard.close()
        self.meter.ledger.close()


def _check_names(config: Config, local: list[str], upstream: list[str]) -> None:
    """Upstream names must not hide local models; a configured default must be served."""
    clash = set(local) & set(upstream)
    if clash:
        raise ValueError(f"upstream names clash with local models: {', '.join(sorted(clash))}")
    override = config.routing.default_model
    if override is not None and override not in [*local, *upstream]:
        raise ValueError(f"the default model {override!r} is not served (served: {', '.join([*local, *upstream])})")


def _drafts_for(config: Config, targets: dict[str, LlamaModel]) -> dict[str, Path]:
    """The draft model's file for each served model it can draft for: those whose vocabulary it shares, itself
    excepted. ValueError naming the difference when it can draft for none (a draft model that cannot be used is
    a mistake worth stopping for)."""
    name = config.engine.draft_model
    if name is None:
        return {}
    try:
        spec = resolve(name, config.data_dir)
    except NotFound as exc:
        raise ValueError(f"--draft-model: {exc.message}") from exc
    draft = LlamaModel(spec.path, vocab_only=True)
    try:
        differences = {model: target.vocabulary_differs(draft) for model, target in targets.items()
                       if target.path != spec.path}
    finally:
        draft.close()
    usable = {model: spec.path for model, difference in differences.items() if difference is None}
    if not usable:
        why = "; ".join(f"{model}: {difference}" for model, difference in differences.items())
        raise ValueError(f"--draft-model {name} cannot draft for any served model: "
                         + (f"its vocabulary differs ({why})" if why else "it is the only model served"))
    return usable


def _digest(config: Config, spec: ModelSpec) -> str:
    """The model file's SHA-256 (remembered in the data dir)."""
    return file_digest(spec.path, config.data_dir / "fingerprints")


def _engine_spec(config: Config, spec: ModelSpec) -> EngineSpec:
    """What a model's engine process builds: the model, its sizes, and its RAM and disk tiers (files are only
    valid for this exact model file and KV type)."""
    digest = _digest(config, spec)
    kv_type = config.engine.kv_type
    directory = config.data_dir / "kv" / f"{spec.id}-{digest[:16]}-{kv_type}"
    limits = TierLimits(ram_bytes=config.engine.ram_tier_bytes, disk_bytes=config.engine.disk_tier_bytes)
    return EngineSpec(name=spec.id, model_path=spec.path, config=config.engine, tier_fingerprint=f"{digest}:{kv_type}",
                      system_fingerprint=system_fingerprint(digest, engine_build()),
                      tier_directory=directory, tier_limits=limits)
