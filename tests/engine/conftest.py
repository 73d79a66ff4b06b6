"""A real SmolLM2 engine, shared by the engine tests, plus a helper that runs one request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from minimill.config import EngineConfig
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams, Usage
from minimill.metrics import Metrics
from minimill.models.catalogue import SMALLEST, resolve


@dataclass
class Outcome:
    """Everything one request produced."""

    texts: dict[int, str]
    tokens: dict[int, list[int]]
    finish: dict[int, str | None]
    usage: Usage


def make_engine(model: LlamaModel, **overrides: object) -> Engine:
    config = EngineConfig(**{"kv_size": 4096, "max_seqs": 16, "threads": 2, **overrides})  # type: ignore[arg-type]
    return Engine(SMALLEST, model, config, Metrics())


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaModel]:
    loaded = LlamaModel(resolve(SMALLEST, tmp_path_factory.mktemp("data")).path, n_gpu_layers=0)
    yield loaded
    loaded.close()


@pytest.fixture()
def engine(model: LlamaModel) -> Iterator[Engine]:
    fresh = make_engine(model)
    yield fresh
    fresh.close()


async def collect(engine: Engine, prompt: list[int], n: int = 1, tenant: str = "", **params: object) -> Outcome:
    request = GenerationRequest(request_id="t", prompt_tokens=tuple(prompt), n=n, tenant=tenant,
                                params=SamplingParams(**params))  # type: ignore[arg-type]
    out = Outcome({}, {}, {}, Usage(0, 0, 0))
    async for item in engine.generate(request):
        if isinstance(item, ChoiceDelta):
            out.texts[item.index] = out.texts.get(item.index, "") + item.text
            out.tokens.setdefault(item.index, []).extend(item.token_ids)
            out.finish[item.index] = item.finish_reason
        else:
            out.usage = item
    return out


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]
