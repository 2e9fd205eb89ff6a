"""Shipped-model loading: checksum against the card, and one clear ModelLoadError for every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from app.errors import ModelLoadError
from app.model.architecture import GeneratorConfig, build_generator, count_conv_layers
from app.model.export import write_model_card
from app.model.loading import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    GENERATOR_FILE,
    load_generator,
    read_model_card,
    sha256_file,
)

WIDTH = 0.1


def _ship(model: keras.Model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / GENERATOR_FILE)
    write_model_card(
        folder, version="test", generator_config=GeneratorConfig(width=WIDTH), parameters=model.count_params(),
        conv_layers=count_conv_layers(model), training={"data": "none", "epochs": 0}, validation={},
    )
    return folder


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ship(build_generator(GeneratorConfig(width=WIDTH)), tmp_path_factory.mktemp("model") / "conv2d")


def test_round_trip_through_the_card(shipped: Path) -> None:
    loaded = load_generator(shipped)
    card = loaded.card
    assert card["files"][GENERATOR_FILE]["sha256"] == loaded.sha256
    assert card["energy_range_gev"] == [2.0, 500.0]
    assert card["particle"] == "e-"
    assert card["angle_deg"] == 90.0
    assert card["architecture"]["conv_layers"] == 28
    assert card["architecture"]["parameters"] == loaded.model.count_params()
    assert (shipped / CARD_MARKDOWN_FILE).read_text().startswith("# Model card: conv2d test")
    latent = np.random.default_rng(1).standard_normal((2, 200)).astype(np.float32)
    original = keras.models.load_model(shipped / GENERATOR_FILE)
    np.testing.assert_array_equal(np.asarray(loaded.model(latent)), np.asarray(original(latent)))
    assert tuple(loaded.model(latent).shape) == (2, 25, 25, 25)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupted_weights_are_refused(shipped: Path, tmp_path: Path) -> None:
    folder = _copy(shipped, tmp_path / "m")
    data = bytearray((folder / GENERATOR_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / GENERATOR_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"sha256 .* does not match"):
        load_generator(folder)


def _edit_card(folder: Path, **changes: object) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    card.update(changes)
    (folder / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / CARD_FILE).unlink(), "model card missing"),
        (lambda f: (f / CARD_FILE).write_text("{not json"), "cannot read the model card"),
        (lambda f: (f / CARD_FILE).write_text("[]"), "must be a JSON object"),
        (lambda f: _edit_card(f, schema_version=99), "schema_version 99"),
        (lambda f: _edit_card(f, files={}), "sha256"),
        (lambda f: (f / GENERATOR_FILE).unlink(), "file missing"),
    ],
)
def test_broken_folders_give_one_clear_error(shipped: Path, tmp_path: Path, damage: object, message: str) -> None:
    folder = _copy(shipped, tmp_path / "m")
    damage(folder)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        load_generator(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_generator(tmp_path / "nope")


def test_unloadable_file_with_matching_checksum(shipped: Path, tmp_path: Path) -> None:
    folder = _copy(shipped, tmp_path / "m")
    (folder / GENERATOR_FILE).write_bytes(b"not a keras archive")
    _edit_card(folder, files={GENERATOR_FILE: {"sha256": sha256_file(folder / GENERATOR_FILE)}})
    with pytest.raises(ModelLoadError, match="Keras cannot load"):
        load_generator(folder)


def test_model_of_the_wrong_shape(tmp_path: Path) -> None:
    inputs = keras.Input((200,))
    wrong = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    folder = _ship(wrong, tmp_path / "m")
    with pytest.raises(ModelLoadError, match="expected"):
        load_generator(folder)


def test_read_model_card(shipped: Path) -> None:
    assert read_model_card(shipped)["name"] == "conv2d"


@pytest.mark.integration
def test_loading_never_imports_training(shipped: Path) -> None:
    code = (
        "import sys; from app.model.loading import load_generator; "
        f"load_generator({str(shipped)!r}); "
        "assert 'app.model.training' not in sys.modules, 'loading imported training'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
