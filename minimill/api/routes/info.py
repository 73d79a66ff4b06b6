"""`GET /v1/models`, `/v1/evals`, `/health`, `/metrics`."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.schemas import ModelCard, ModelList
from minimill.errors import NotFound
from minimill.evals import report
from minimill.runtime import Runtime

router = APIRouter()


def _card(runtime: Runtime, model_id: str) -> ModelCard:
    board, default = runtime.router.scoreboard(), runtime.router.default()
    score = board.models.get(model_id)
    prices, scores = runtime.meter.prices.for_model(model_id).as_dict(), score.as_dict() if score else None
    if model_id in runtime.upstreams:
        upstream = runtime.upstreams[model_id].spec
        return ModelCard(id=model_id, created=0, owned_by="upstream", context_length=None,
                         description=f"upstream model {upstream.model} (OpenAI-compatible endpoint)",
                         default=model_id == default.model, prices=prices, scores=scores)
    engine, spec = runtime.engine_for(model_id), runtime.specs[model_id]
    return ModelCard(id=model_id, created=engine.created, context_length=engine.n_ctx, description=spec.description,
                     default=model_id == default.model, prices=prices, scores=scores)


def _aliases(runtime: Runtime) -> list[ModelCard]:
    default = runtime.router.default()
    target = _card(runtime, default.model)
    return [target.model_copy(update={"id": "default", "default": False, "scores": None,
                                      "description": f"resolves to {default.model}: {default.reason}"}),
            ModelCard(id="auto", created=0, context_length=None, default=False,
                      description="routes each chat request to the cheapest served model expected to pass it, "
                                  "escalating through a cascade when its answer fails the check")]


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, tenant: TenantDep) -> ModelList:
    """Every served model with its prices and eval scores, then the `default` and `auto` aliases."""
    return ModelList(data=[*(_card(runtime, model_id) for model_id in runtime.model_ids), *_aliases(runtime)])


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, runtime: RuntimeDep, tenant: TenantDep) -> ModelCard:
    """One served model (or alias)."""
    aliases = {card.id: card for card in _aliases(runtime)}
    if model_id in aliases:
        return aliases[model_id]
    runtime.resolve(model_id)
    return _card(runtime, model_id)


@router.get("/v1/evals")
async def evals(runtime: RuntimeDep, tenant: TenantDep) -> JSONResponse:
    """The scoreboard of the served models: per model and suite, accuracy with a 95% interval, tokens,
    latency and cost; the default and why; the same as a Markdown table."""
    board, default = runtime.router.scoreboard(), runtime.router.default()
    return JSONResponse({"object": "scoreboard", "default": {"model": default.model, "reason": default.reason},
                         "models": {name: score.as_dict() for name, score in board.models.items()},
                         "markdown": report.markdown(board, default.model),
                         "plot": "/v1/evals/plot.png"})


@router.get("/v1/evals/plot.png")
async def evals_plot(runtime: RuntimeDep, tenant: TenantDep) -> Response:
    """The scoreboard's price-vs-quality plot."""
    board, default = runtime.router.scoreboard(), runtime.router.default()
    if not board.models:
        raise NotFound("no eval results yet: run `minimill eval` against this server", code="no_scoreboard")

    def render() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            return report.plot(board, Path(folder) / "plot.png", default.model).read_bytes()

    return Response(await asyncio.to_thread(render), media_type="image/png")


@router.get("/health")
async def health(runtime: RuntimeDep) -> Response:
    """Liveness plus each engine's load; 503 when an engine is unhealthy."""
    models = {name: engine.stats() for name, engine in runtime.engines.items()}
    ok = all(stats.healthy for stats in models.values())

    body = {"status": "ok" if ok else "degraded", "models": {
        name: {"waiting": s.waiting, "running": s.running, "retained": s.retained,
               "kv_used": s.kv_used, "kv_total": s.kv_total} for name, s in models.items()}}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
