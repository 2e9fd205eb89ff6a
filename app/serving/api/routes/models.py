"""The served model cards and the request limits."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.serving.api.deps import BatcherDep, StateDep, require_token
from app.serving.api.schemas import ModelCardPublic, ModelsBody

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])


@router.get("/v1/models", summary="Served models and limits")
async def list_models(state: StateDep, batcher: BatcherDep) -> ModelsBody:
    """One card per device worker (name, version, sha256, backend, device, precision, model.json)."""
    settings = state.settings
    cards = [ModelCardPublic(**vars(backend.info)) for backend in batcher.backends]
    limits = {
        "energy_min_gev": settings.energy_min_gev,
        "energy_max_gev": settings.energy_max_gev,
        "max_showers_per_request": settings.max_showers_per_request,
        "max_batch_size": settings.max_batch_size,
        "max_queued_showers": settings.max_queued_showers,
        "request_timeout_s": settings.request_timeout_s,
        "formats": ["npy", "hdf5"],
        "dtypes": ["float32", "float16"],
    }
    return ModelsBody(models=cards, limits=limits)
