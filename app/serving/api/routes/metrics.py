"""Prometheus scrape endpoint (open, like the probes)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.serving.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Every ``calogan_*`` metric in the Prometheus text format."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
