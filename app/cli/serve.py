"""``calogan serve``: the HTTP service (FastAPI + uvicorn) with a draining SIGTERM."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Literal

import typer
import uvicorn

from app.config import load_settings
from app.log import configure_logging, logging_config

if TYPE_CHECKING:  # the service's imports stay out of `calogan --help`
    from app.serving.api.deps import ServiceState

logger = logging.getLogger(__name__)


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (CALOGAN_HOST; default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; 0 picks a free one (CALOGAN_PORT; default 8000).")] = None,
    backend: Annotated[
        Literal["auto", "tf", "int8", "fake"] | None,
        typer.Option(help="auto: tf on a GPU, else int8 if available, else tf; fake: smoke tests "
                     "(CALOGAN_BACKEND; default auto)."),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Shipped model folder (generator.keras + model.json) "
                                  "(CALOGAN_MODEL_DIR; default models/conv2d).")
    ] = None,
    device: Annotated[
        Literal["auto", "cpu", "gpu"] | None,
        typer.Option(help="Where the tf backend runs (CALOGAN_DEVICE; default auto)."),
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most showers per model call, 1-2048 (CALOGAN_MAX_BATCH_SIZE; default 2048).")
    ] = None,
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None, typer.Option(help="(CALOGAN_LOG_LEVEL; default INFO)")
    ] = None,
) -> None:
    """Serve showers over HTTP: POST /simulate?energy=500&n=1000 (OpenAPI docs at /docs).

    Every setting also reads CALOGAN_<NAME> (or .env), among them: CALOGAN_ENERGY_MIN_GEV and
    CALOGAN_ENERGY_MAX_GEV (2-500), CALOGAN_MAX_SHOWERS_PER_REQUEST (10000), CALOGAN_MAX_QUEUED_SHOWERS
    (65536, then 503 + Retry-After), CALOGAN_MAX_QUEUE_DELAY_MS (5), CALOGAN_REQUEST_TIMEOUT_S (600),
    CALOGAN_API_TOKENS / CALOGAN_API_TOKENS_FILE (bearer tokens; none = open), CALOGAN_DRAIN_PAUSE_S
    and CALOGAN_DRAIN_TIMEOUT_S (SIGTERM: readiness false, pause, finish in-flight work, exit).
    """
    settings = load_settings(
        host=host, port=port, backend=backend, model_dir=model_dir, device=device,
        max_batch_size=max_batch_size, log_level=log_level,
    )
    configure_logging(settings.log_level)
    # TensorFlow's C++ INFO/WARNING lines would break the JSON-lines log; errors still get through.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from app.serving.api.app import create_app
    from app.serving.backends import load_backends

    backends = load_backends(settings)  # no model shipped: one clear line here, before uvicorn starts
    app = create_app(settings, backends)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on",
        log_config=logging_config(settings.log_level), timeout_graceful_shutdown=settings.drain_timeout_s,
    )
    DrainingServer(config, state=app.state.service, pause_s=settings.drain_pause_s).run()


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with readiness turned false on the first SIGTERM/SIGINT and an optional pause.

    During the pause the server still serves (load balancers see /readyz fail and stop sending);
    a second signal ends the pause early. Then uvicorn stops accepting, waits for in-flight
    responses (up to drain_timeout_s) and runs the lifespan shutdown, which drains the batcher.
    """

    def __init__(self, config: uvicorn.Config, *, state: ServiceState, pause_s: float = 0.0) -> None:
        super().__init__(config)
        self._state = state
        self._pause_s = pause_s
        self._pause: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self._state.draining
        self._state.draining = True
        if first and self._pause_s > 0:
            logger.info("draining: readiness off, stopping in %.1f s", self._pause_s, extra={"signal": sig})
            self._pause = threading.Timer(self._pause_s, super().handle_exit, (sig, frame))
            self._pause.daemon = True
            self._pause.start()
            return
        if self._pause is not None:
            self._pause.cancel()
        logger.info("draining: readiness off, finishing in-flight requests", extra={"signal": sig})
        super().handle_exit(sig, frame)
