"""One module per resource; ``api_router`` includes them all."""

from fastapi import APIRouter

from app.serving.api.routes import health, metrics, models, simulate

api_router = APIRouter()
api_router.include_router(simulate.router)
api_router.include_router(models.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)

__all__ = ["api_router"]
