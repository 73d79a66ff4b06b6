"""Composition root: builds every long-lived object once; `serve` and tests both use it."""

from __future__ import annotations

from dataclasses import dataclass

from minimill.config import Config
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.errors import NotFound
from minimill.metrics import Metrics
from minimill.models.catalogue import ModelSpec, resolve


@dataclass(slots=True)
class Runtime:
    """The served models (first = default), their metrics and the config they were built from."""

    config: Config
    engines: dict[str, Engine]
    specs: dict[str, ModelSpec]
    metrics: Metrics

    @classmethod
    def build(cls, config: Config) -> Runtime:
        """Load every configured model and start its engine."""
        metrics = Metrics()
        engines: dict[str, Engine] = {}
        specs: dict[str, ModelSpec] = {}
        try:
            for name in config.models:
                spec = resolve(name, config.data_dir)
                engines[spec.id] = Engine(spec.id, LlamaModel(spec.path), config.engine, metrics)
                specs[spec.id] = spec
        except Exception:
            for engine in engines.values():
                engine.close()
            raise
        return cls(config=config, engines=engines, specs=specs, metrics=metrics)

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
