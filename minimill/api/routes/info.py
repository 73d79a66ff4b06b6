"""`GET /v1/models`, `/v1/evals`, `/health`, `/metrics`."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.errors import NotFound
from minimill.evals import report
from minimill.runtime import Runtime
from minimill.serving.schemas import ModelCard, ModelList

router = APIRouter()


def _cards(runtime: Runtime) -> dict[str, ModelCard]:
    """Every served model's card (prices, eval scores) and the `default` and `auto` aliases, from one read
    of the scoreboard."""
    board, default = runtime.router.scoreboard(), runtime.router.default()
    cards: dict[str, ModelCard] = {}
    for model_id in runtime.model_ids:
        score = board.models.get(model_id)
        card = ModelCard(id=model_id, created=0, context_length=None, description="",
                         default=model_id == default.model, prices=runtime.meter.prices.for_model(model_id).as_dict(),
                         scores=score.as_dict() if score else None)
        if model_id in runtime.upstreams:
            upstream = runtime.upstreams[model_id].spec
            cards[model_id] = card.model_copy(update={
                "owned_by": "upstream", "description": f"upstream model {upstream.model} (OpenAI-compatible endpoint)"})
        else:
            engine, spec = runtime.engines[model_id], runtime.specs[model_id]
            cards[model_id] = card.model_copy(update={"created": engine.created, "context_length": engine.n_ctx,
                                                      "description": spec.description})
    cards["default"] = cards[default.model].model_copy(update={
        "id": "default", "default": False, "scores": None, "description": f"resolves to {default.model}: "
                                                                          f"{default.reason}"})
    cards["auto"] = ModelCard(id="auto", created=0, context_length=None, default=False,
                              description="routes each chat request to the cheapest served model expected to pass "
                                          "it, escalating through a cascade when its answer fails the check")
    return cards


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, tenant: TenantDep) -> ModelList:
    """Every served model with its prices and eval scores, then the `default` and `auto` aliases."""
    return ModelList(data=list(_cards(runtime).values()))


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, runtime: RuntimeDep, tenant: TenantDep) -> ModelCard:
    """One served model (or alias); 404 for one that is not served."""
    cards = _cards(runtime)
    if model_id not in cards:
        runtime.resolve(model_id)  # raises the NotFound that names what is served
    return cards[model_id]


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
               "kv_used": s.kv_used, "kv_total": s.kv_total, "healthy": s.healthy, "restarts": s.restarts}
        for name, s in models.items()}}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text exposition."""
    text = runtime.metrics.exposition(engine.metrics_text() for engine in runtime.engines.values())
    return Response(text, media_type=CONTENT_TYPE_LATEST)
