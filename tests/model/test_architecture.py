"""The Conv2D GAN networks: the paper's sizes at full width, shapes and serialisation at tiny width."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from app.model.architecture import (
    LATENT_SIZE,
    ConvBlock,
    DiscriminatorBranch,
    GeneratorBranch,
    GeneratorConfig,
    build_discriminator,
    build_generator,
    count_conv_layers,
    with_output_relu,
)

TINY = 0.1


def _non_trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)


def test_full_generator_has_the_papers_size() -> None:
    generator = build_generator()
    assert generator.count_params() == 2_055_324  # spec 1.5 (the authors' model.summary())
    assert _non_trainable(generator) == 1_878
    assert count_conv_layers(generator) == 28
    assert tuple(generator.input_shape) == (None, LATENT_SIZE)
    assert tuple(generator.output_shape) == (None, 25, 25, 25)


def test_full_discriminator_has_the_papers_size() -> None:
    discriminator = build_discriminator()
    assert discriminator.count_params() == 714_114  # spec 2.3
    assert _non_trainable(discriminator) == 1_226
    assert count_conv_layers(discriminator) == 18


def test_width_keeps_topology_and_shapes() -> None:
    generator = build_generator(GeneratorConfig(width=TINY))
    assert count_conv_layers(generator) == 28
    assert generator.count_params() < 2_055_324 / 10


@pytest.fixture(scope="module")
def tiny_gan() -> tuple[keras.Model, keras.Model]:
    return build_generator(GeneratorConfig(width=TINY)), build_discriminator(TINY)


def test_tiny_forward_pass_shapes(tiny_gan: tuple[keras.Model, keras.Model]) -> None:
    generator, discriminator = tiny_gan
    latent = np.random.default_rng(1).standard_normal((3, LATENT_SIZE)).astype(np.float32)
    showers = generator(latent)
    assert tuple(showers.shape) == (3, 25, 25, 25)
    assert showers.dtype == "float32"
    assert float(keras.ops.min(showers)) >= 0.0  # the shipped model ends in a ReLU
    heads = discriminator(showers)
    assert set(heads) == {"generation", "auxiliary", "ecal"}
    assert all(tuple(head.shape) == (3, 1) for head in heads.values())
    probability = keras.ops.convert_to_numpy(heads["generation"])
    assert np.all((probability > 0) & (probability < 1))
    np.testing.assert_allclose(  # the ecal head is the plain sum of the input cells
        keras.ops.convert_to_numpy(heads["ecal"])[:, 0],
        keras.ops.convert_to_numpy(showers).reshape(3, -1).sum(axis=1), rtol=1e-5,
    )


def test_linear_generator_can_go_negative_and_relu_wrapper_shares_weights() -> None:
    linear = build_generator(GeneratorConfig(width=TINY, output_relu=False))
    relu = with_output_relu(linear)
    latent = np.random.default_rng(2).standard_normal((2, LATENT_SIZE)).astype(np.float32)
    raw = keras.ops.convert_to_numpy(linear(latent))
    assert raw.min() < 0  # untrained linear output has both signs, so the ReLU below is tested
    np.testing.assert_allclose(keras.ops.convert_to_numpy(relu(latent)), np.maximum(raw, 0), atol=1e-6)
    assert [id(v) for v in relu.trainable_variables] == [id(v) for v in linear.trainable_variables]


def test_views_are_mapped_back_to_x_y_layer() -> None:
    """With identity branches the merge sees three copies of [x, y, layer]: the permutes invert each other."""
    x = np.random.default_rng(3).random((1, 25, 25, 25)).astype(np.float32)
    for forward, back in (((3, 1, 2), (2, 3, 1)), ((2, 3, 1), (3, 1, 2))):
        there = keras.layers.Permute(forward)(x)
        assert not np.array_equal(keras.ops.convert_to_numpy(there), x)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.layers.Permute(back)(there)), x)
    # The layer-x view: spatial axes are (layer, x), channels are y (numpy reference).
    view = keras.ops.convert_to_numpy(keras.layers.Permute((3, 1, 2))(x))
    np.testing.assert_array_equal(view, np.transpose(x, (0, 3, 1, 2)))


def test_branch_shapes() -> None:
    assert GeneratorBranch(TINY).compute_output_shape((None, 5, 5, 5)) == (None, 25, 25, 25)
    assert DiscriminatorBranch(TINY).compute_output_shape((None, 25, 25, 25)) == (None, 9, 9, 9)
    with pytest.raises(ValueError, match="expects"):
        GeneratorBranch(TINY).build((None, 6, 6, 5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"filters": 0, "kernel_size": 3}, "filters"), ({"filters": 4, "kernel_size": 3, "padding": "full"}, "padding"),
     ({"filters": 4, "kernel_size": 3, "dropout_rate": 1.0}, "dropout_rate")],
)
def test_conv_block_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvBlock(**kwargs)


def test_bad_width_is_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        build_generator(GeneratorConfig(width=0.0))


@pytest.mark.parametrize("layer", [ConvBlock(8, 3, padding="valid", name="c"), GeneratorBranch(0.25),
                                   DiscriminatorBranch(0.25)])
def test_layer_config_round_trip(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config


def test_model_config_round_trip_and_save_load(tiny_gan: tuple[keras.Model, keras.Model], tmp_path: Any) -> None:
    generator, discriminator = tiny_gan
    for model in (generator, discriminator):
        rebuilt = keras.Model.from_config(model.get_config())
        assert rebuilt.count_params() == model.count_params()
        assert count_conv_layers(rebuilt) == count_conv_layers(model)
    path = tmp_path / "g.keras"
    generator.save(path)
    loaded = keras.models.load_model(path)  # finds the registered custom layers, safe mode on
    latent = np.random.default_rng(4).standard_normal((2, LATENT_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(latent)),
                                  keras.ops.convert_to_numpy(generator(latent)))


def test_generator_config_dict_round_trip() -> None:
    config = GeneratorConfig(width=0.5, output_relu=False, output_scale=0.01)
    assert GeneratorConfig.from_dict(config.to_dict()) == config


def test_output_scale_multiplies_the_output_without_parameters() -> None:
    plain = build_generator(GeneratorConfig(width=TINY))
    scaled = build_generator(GeneratorConfig(width=TINY, output_scale=0.01))
    assert scaled.count_params() == plain.count_params()
    assert "output_scale" not in [layer.name for layer in plain.layers]  # scale 1: the paper's graph exactly
    scaled.set_weights(plain.get_weights())
    latent = np.random.default_rng(5).standard_normal((2, LATENT_SIZE)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(scaled(latent)), 0.01 * np.asarray(plain(latent)), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="output_scale"):
        build_generator(GeneratorConfig(width=TINY, output_scale=-1.0))
