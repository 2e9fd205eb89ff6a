"""Service configuration: one ``Settings`` object, read from ``CALOGAN_<FIELD>`` variables or ``.env``.

Entry points (the CLI, the uvicorn factory) build it once and pass it down; nothing builds it at
import time. Tests build their own with ``Settings(..., _env_file=None)``. Imports ``app.errors`` and
``app.physics.detector`` only (a leaf: anyone may import it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import InvalidRequest
from app.physics.detector import PRIMARY_ENERGY_LIMITS_GEV

SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "conv2d"
"""The model folder of this source tree, whatever the working directory (a source checkout or an
editable install); a wheel has none, and then ``CALOGAN_MODEL_DIR`` names the folder."""

BackendName = Literal["auto", "tf", "int8", "fake"]
"""``auto`` picks the fastest available backend for the device; ``fake`` is for tests and smoke tests."""


class Settings(BaseSettings):
    """Service configuration; each field is read from ``CALOGAN_<FIELD>`` (or ``.env``).

    The limits here are the ones the API documents: energy range, showers per request, queue size.
    """

    model_config = SettingsConfigDict(env_prefix="CALOGAN_", env_file=".env", extra="ignore")

    # Model and backend.
    model_dir: Path = Field(SHIPPED_MODEL_DIR, description="Folder with generator.keras and model.json.")
    backend: BackendName = Field("auto", description="auto, tf (float32 TensorFlow), int8, or fake (tests).")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="Where the tf backend runs.")
    warmup: bool = Field(True, description="Run the model once at full batch size before reporting ready.")

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted on /simulate and /v1/models (comma-separated or a JSON list); "
        "empty means no authentication.",
    )
    api_tokens_file: Path | None = Field(None, description="File with one accepted bearer token per line.")

    # Request limits.
    energy_min_gev: float = Field(2.0, description="Lowest primary energy served, GeV.")
    energy_max_gev: float = Field(500.0, description="Highest primary energy served, GeV.")
    max_showers_per_request: int = Field(10_000, ge=1, description="Largest n of one request.")
    max_request_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body, bytes (413 above; a list of 10,000 energies is ~120 kB)."
    )
    request_timeout_s: float = Field(600.0, gt=0.0, description="A request not finished by then fails (504).")

    # Dynamic batcher.
    max_batch_size: int = Field(2048, ge=1, le=2048, description="Most showers in one model call.")
    max_queue_delay_ms: float = Field(
        5.0, ge=0.0, le=10_000.0, description="Longest time the oldest waiting request waits for a batch to fill."
    )
    round_robin_showers: int = Field(
        256, ge=1, description="Showers one request adds to a batch per round-robin turn (fairness)."
    )
    max_buffered_batches: int = Field(
        2, ge=1, description="Finished chunks a request may hold unsent before its rows wait (memory bound)."
    )
    max_queued_showers: int = Field(65_536, ge=1, description="Showers waiting before requests get 503.")

    # Output and shutdown.
    hdf5_compression: Literal["gzip", "none"] = Field("gzip", description="Compression of HDF5 responses.")
    tmp_dir: Path | None = Field(None, description="Where HDF5 responses are written before sending.")
    drain_pause_s: float = Field(
        0.0, ge=0.0, description="After SIGTERM, keep serving this long with readiness false (load balancers)."
    )
    drain_timeout_s: float = Field(60.0, gt=0.0, description="Longest wait for in-flight requests after SIGTERM.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [token.strip() for token in text.split(",") if token.strip()]
        return value

    @field_validator("api_tokens_file")
    @classmethod
    def _token_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"token file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        low, high = PRIMARY_ENERGY_LIMITS_GEV
        if not low <= self.energy_min_gev < self.energy_max_gev <= high:
            raise ValueError(
                f"energy range [{self.energy_min_gev:g}, {self.energy_max_gev:g}] GeV must be increasing and "
                f"inside [{low:g}, {high:g}] GeV"
            )
        if self.max_showers_per_request > self.max_queued_showers:
            # Otherwise a request at the limit could never be admitted.
            raise ValueError(
                f"max_showers_per_request={self.max_showers_per_request} exceeds "
                f"max_queued_showers={self.max_queued_showers}"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_limits_gev(self) -> tuple[float, float]:
        """The served primary-energy range, GeV, inclusive."""
        return (self.energy_min_gev, self.energy_max_gev)

    def accepted_tokens(self) -> list[str]:
        """Every bearer token the service accepts (settings plus the token file); empty means open."""
        tokens = [token.get_secret_value() for token in self.api_tokens]
        if self.api_tokens_file is not None:
            lines = self.api_tokens_file.read_text().splitlines()
            tokens += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return tokens


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus explicit overrides (None means "not given").

    Raises
    ------
    InvalidRequest
        A value is out of range; the message names the field, so the CLI can print one line.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise InvalidRequest(f"invalid configuration ({problems})", allowed="see `calogan serve --help`") from exc
