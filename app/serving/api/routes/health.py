"""Liveness and readiness probes: cheap, never queued behind the model, never authenticated."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.serving.api.deps import StateDep
from app.serving.api.schemas import HealthBody, ReadyBody

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> HealthBody:
    """Always 200 while the event loop runs; use it for the liveness probe."""
    return HealthBody()


@router.get(
    "/readyz",
    summary="Readiness: model loaded, warmed up, not draining",
    response_model=ReadyBody,
    responses={503: {"model": ReadyBody, "description": "Not ready: loading, draining, or a worker failed."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """200 when requests will be served; 503 while loading or warming up, after SIGTERM, or if a worker died."""
    reason = state.not_ready_reason()
    queued = state.batcher.queued_showers if state.batcher is not None else 0
    body = ReadyBody(ready=reason is None, reason=reason, queued_showers=queued)
    return JSONResponse(body.model_dump(), status_code=200 if reason is None else 503)
