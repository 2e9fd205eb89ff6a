"""Request and response bodies of the HTTP API (pydantic); input classes are never output classes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SpectrumRequest(BaseModel):
    """n showers with primary energies drawn uniformly in [emin, emax] GeV (drawn from the request's seed)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"emin": 10.0, "emax": 500.0, "n": 100}]})

    emin: float = Field(description="Lowest primary energy, GeV.")
    emax: float = Field(description="Highest primary energy, GeV.")
    n: int = Field(description="Number of showers.")


class ErrorBody(BaseModel):
    """Every error answer: what was wrong, and what would have been accepted."""

    detail: str = Field(description="What was wrong, in one sentence.")
    allowed: str | None = Field(None, description="What the service accepts instead, when that helps.")
    errors: list[dict[str, Any]] | None = Field(None, description="Each invalid field, for validation errors.")


class HealthBody(BaseModel):
    """Liveness: the process answers."""

    status: str = "ok"


class ReadyBody(BaseModel):
    """Readiness: the model is loaded and warmed up, and the service is not draining."""

    ready: bool
    reason: str | None = Field(None, description="Why not ready: loading, draining, or worker failed.")
    queued_showers: int = 0


class ModelCardPublic(BaseModel):
    """A served model: identity, how it runs, and its full card."""

    name: str
    version: str
    sha256: str
    backend: str
    device: str
    precision: str
    card: dict[str, Any] = Field(default_factory=dict, description="The shipped model.json.")


class ModelsBody(BaseModel):
    """Every model this replica serves (one per device), with the request limits."""

    models: list[ModelCardPublic]
    limits: dict[str, Any] = Field(description="Energy range (GeV), most showers per request, batch size.")
