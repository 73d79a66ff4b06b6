"""`GET /v1/models`, `/health`, `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.schemas import ModelCard, ModelList
from minimill.runtime import Runtime

router = APIRouter()


def _card(runtime: Runtime, model_id: str) -> ModelCard:
    engine, spec = runtime.engine_for(model_id), runtime.specs[model_id]
    return ModelCard(id=model_id, created=engine.created, context_length=engine.n_ctx,
                     description=spec.description, default=model_id == runtime.default_model)


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, tenant: TenantDep) -> ModelList:
    """Every served model; the first is the default."""
    return ModelList(data=[_card(runtime, model_id) for model_id in runtime.engines])


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, runtime: RuntimeDep, tenant: TenantDep) -> ModelCard:
    """One served model."""
    return _card(runtime, model_id)


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
