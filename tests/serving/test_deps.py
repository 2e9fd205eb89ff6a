"""Format negotiation and settings: the small pure pieces of the service."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.config import Settings, load_settings
from app.errors import InvalidRequest
from app.log import JsonLinesFormatter
from app.serving.api.deps import negotiate_format
from app.serving.api.errors import NotAcceptable


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(None, "npy"), ("", "npy"), ("*/*", "npy"), ("application/x-hdf5", "hdf5"),
     ("application/x-npy;q=0.2, application/x-hdf5;q=0.9", "hdf5"), ("text/html, */*;q=0.1", "npy")],
)
def test_negotiate_format(accept: str | None, expected: str) -> None:
    assert negotiate_format(None, accept) == expected
    assert negotiate_format("hdf5", accept) == "hdf5"  # ?format= wins


def test_negotiate_format_refuses_what_it_cannot_make() -> None:
    with pytest.raises(NotAcceptable):
        negotiate_format(None, "application/json, text/html;q=0.5")
    with pytest.raises(NotAcceptable):
        negotiate_format(None, "application/x-npy;q=0")


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# one per line\nthird\n")
    monkeypatch.setenv("CALOGAN_API_TOKENS", "first, second")
    monkeypatch.setenv("CALOGAN_API_TOKENS_FILE", str(token_file))
    monkeypatch.setenv("CALOGAN_MAX_BATCH_SIZE", "128")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_batch_size == 128
    assert settings.accepted_tokens() == ["first", "second", "third"]
    monkeypatch.setenv("CALOGAN_API_TOKENS", '["json"]')
    assert Settings(_env_file=None).api_tokens[0].get_secret_value() == "json"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [({"max_batch_size": 4096}, "max_batch_size"), ({"energy_min_gev": 600.0}, "energy range"),
     ({"max_showers_per_request": 100_000}, "max_queued_showers"), ({"api_tokens_file": Path("/nope")}, "token")],
)
def test_bad_settings_are_one_clear_error(
    overrides: dict[str, object], fragment: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    with pytest.raises(InvalidRequest, match=fragment):
        load_settings(**overrides)


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord("app.x", logging.INFO, __file__, 1, "batch of %d", (64,), None)
    record.batch_size = 64
    entry = json.loads(JsonLinesFormatter().format(record))
    assert entry["message"] == "batch of 64"
    assert entry["batch_size"] == 64
    assert entry["level"] == "INFO"


def test_the_shipped_model_is_found_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALOGAN_MODEL_DIR", raising=False)
    folder = Settings(_env_file=None).model_dir  # type: ignore[call-arg]
    assert folder.is_absolute()
    assert (folder / "model.json").is_file()
    assert (folder / "generator.keras").is_file()
