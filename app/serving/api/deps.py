"""Shared state and dependencies of the routes, as aliases that read like plain types in signatures."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.errors import InvalidRequest, ModelLoadError
from app.serving.api.errors import NotAcceptable, Unauthorized
from app.serving.batcher import ShowerBatcher
from app.serving.encoders import OutputFormat
from app.serving.metrics import ServiceMetrics


@dataclass
class ServiceState:
    """What the app holds between requests; ``batcher`` is set by the lifespan once the model is loaded."""

    settings: Settings
    metrics: ServiceMetrics
    tokens: tuple[bytes, ...] = ()
    batcher: ShowerBatcher | None = None
    ready: bool = False  # model loaded and warmed up
    draining: bool = False  # set on SIGTERM, before uvicorn stops accepting connections
    warmup_error: str | None = None

    def not_ready_reason(self) -> str | None:
        """Why the replica should get no traffic now, or None when it is ready."""
        if self.draining or (self.batcher is not None and self.batcher.closing):
            return "draining"
        if self.batcher is None:
            return "loading model"
        if self.warmup_error is not None:
            return f"warm-up failed ({self.warmup_error})"
        if not self.ready:
            return "warming up"
        if not self.batcher.healthy:
            return "batcher worker failed"
        return None


def get_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState`."""
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_batcher(state: StateDep) -> ShowerBatcher:
    """The running batcher, or ModelLoadError (503) while the model is still loading."""
    if state.batcher is None:
        raise ModelLoadError("the model is still loading; retry shortly")
    return state.batcher


BatcherDep = Annotated[ShowerBatcher, Depends(get_batcher)]

_bearer = HTTPBearer(auto_error=False, description="Required only when the service is configured with tokens.")


def require_token(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> None:
    """Let the request through when no tokens are configured or it carries one of them."""
    if not state.tokens:
        return
    if credentials is None:
        raise Unauthorized("this service requires a bearer token")
    offered = credentials.credentials.encode()
    # Compare against every token, in constant time each, so timing says nothing about which matched.
    matches = [hmac.compare_digest(offered, token) for token in state.tokens]
    if not any(matches):
        raise Unauthorized("the bearer token is not accepted")


def strict_query(request: Request) -> None:
    """Refuse query parameters the route does not declare, and any parameter given twice.

    FastAPI ignores both silently: ``energy=100&energy=200`` would simulate one of them and a typo
    such as ``?n_showers=1000`` one shower, each with a 200 that hides the mistake.
    """
    declared = {param.alias for param in request.scope["route"].dependant.query_params}
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - declared)
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s) {', '.join(unknown)}", allowed=", ".join(sorted(declared)))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(f"query parameter(s) {', '.join(repeated)} given more than once",
                             allowed="each parameter at most once")


_ACCEPTED_MEDIA: dict[str, OutputFormat] = {
    "application/x-npy": "npy",
    "application/octet-stream": "npy",
    "application/x-hdf5": "hdf5",
    "application/x-hdf": "hdf5",
    "*/*": "npy",
    "application/*": "npy",
}


def negotiate_format(requested: OutputFormat | None, accept: str | None) -> OutputFormat:
    """The output format: ``?format=`` if given, else the best match of the Accept header, else npy.

    Raises
    ------
    NotAcceptable
        Accept lists only media types the service does not produce.
    """
    if requested is not None:
        return requested
    if not accept or not accept.strip():
        return "npy"
    best: tuple[float, OutputFormat] | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        chosen = _ACCEPTED_MEDIA.get(media.lower())
        if chosen is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, chosen)
    if best is None:
        raise NotAcceptable(
            f"cannot produce any of the media types in Accept: {accept}",
            allowed="application/x-npy or application/x-hdf5 (or ?format=npy|hdf5)",
        )
    return best[1]
