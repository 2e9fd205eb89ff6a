"""The Conv2D GAN of Rehm, Vallecorsa et al. (GRID'2021): generator and discriminator in Keras 3.

The networks follow ``shared/research/conv2d_gan_spec.md`` sections 1 and 2 layer by layer (the
authors' ``Models_m4_1_ReLU.py``). Both look at a 25 x 25 x 25 volume through three 2D "views",
each one a stack of 2D convolutions with a different axis playing the channels:

- view ``xy``: x and y are spatial, the 25 layers are channels (the tensor as it is);
- view ``layer_x``: Permute (3, 1, 2), so layer and x are spatial and y is the channel axis;
- view ``y_layer``: Permute (2, 3, 1), so y and layer are spatial and x is the channel axis.

Shapes are channels_last. Unlike the original code, the generator's output and the discriminator's
input carry no trailing channel axis: both are ``(N, 25, 25, 25)`` float32 GeV indexed
``[x, y, layer]`` (``app.physics.detector.SHOWER_SHAPE``), which is what the service returns.

``width`` scales every free filter count (1.0 is the paper; tests use about 0.1), keeping the
topology, the conv-layer count and every shape. Filters that fix a shape stay as they are: the 25
filters at the end of each generator branch and of the merge conv, and the 9 of the last
discriminator conv.

Full size, per the spec (and the authors' ``model.summary()``):

- generator: 2,055,324 parameters (1,878 non-trainable), 28 conv layers (21 Conv2D,
  6 Conv2DTranspose, 1 merge Conv2D);
- discriminator: 714,114 parameters (1,226 non-trainable), 18 conv layers.

Custom layers are registered under the package ``calogan`` so that ``keras.models.load_model``
finds them; importing this module is enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras
from keras import layers

from app.model.latent import LATENT_SIZE
from app.physics.detector import N_CELLS_X, N_CELLS_Y, N_LAYERS, SHOWER_SHAPE

STEM_SHAPE = (5, 5, 5)
"""The Dense stem's 125 outputs seen as a 5 x 5 x 5 volume."""

LEAKY_SLOPE = 0.3
"""Negative slope of every LeakyReLU: the Keras layer default of the original code (spec 1.6)."""

DROPOUT_RATE = 0.2

# Keras Permute indices are 1-based over the non-batch axes: out axis i takes in axis dims[i].
# A view and its inverse; applying both gives back [x, y, layer].
_VIEWS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "xy": ((1, 2, 3), (1, 2, 3)),
    "layer_x": ((3, 1, 2), (2, 3, 1)),
    "y_layer": ((2, 3, 1), (3, 1, 2)),
}

_PACKAGE = "calogan"


def _scaled(filters: int, width: float) -> int:
    """A filter count times the width multiplier, never below one."""
    return max(1, round(filters * width))


def _check_width(width: float) -> float:
    if not 0.0 < width <= 4.0:
        raise ValueError(f"width must be in (0, 4], a multiplier of the paper's filter counts. Received: {width=}")
    return float(width)


class _Composite(layers.Layer):
    """A layer made of sublayers, listed in ``sublayers`` so that :func:`count_conv_layers` can see them."""

    @property
    def sublayers(self) -> tuple[layers.Layer, ...]:
        """The direct sublayers, in the order they are applied."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBlock(_Composite):
    """Conv2D without bias, then LeakyReLU(0.3), BatchNormalization and Dropout(0.2) (spec 1.3).

    Args:
        filters: number of output channels.
        kernel_size: square kernel edge.
        padding: ``"same"`` or ``"valid"``.
        kernel_initializer: ``"he_uniform"`` for most blocks, ``"glorot_uniform"`` (Keras' default)
            for the first block of each branch, as in the original code.
        dropout_rate: fraction of units dropped in training mode.

    Input shape: ``(N, H, W, C)``.
    Output shape: ``(N, H, W, filters)`` with ``padding="same"``, ``(N, H - k + 1, W - k + 1, filters)``
    with ``"valid"``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        padding: str = "same",
        kernel_initializer: str = "he_uniform",
        dropout_rate: float = DROPOUT_RATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(filters) < 1 or int(kernel_size) < 1:
            raise ValueError(f"filters and kernel_size must be >= 1. Received: {filters=}, {kernel_size=}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'. Received: padding={padding!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.kernel_initializer = kernel_initializer
        self.dropout_rate = float(dropout_rate)
        self.conv = layers.Conv2D(
            self.filters, self.kernel_size, padding=padding, use_bias=False,
            kernel_initializer=kernel_initializer, name="conv",
        )
        self.activation = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="leaky_relu")
        self.norm = layers.BatchNormalization(name="batch_norm")
        self.dropout = layers.Dropout(self.dropout_rate, name="dropout")

    @property
    def sublayers(self) -> tuple[layers.Layer, ...]:
        return (self.conv, self.activation, self.norm, self.dropout)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.conv.build(input_shape)
        output_shape = self.conv.compute_output_shape(input_shape)
        for layer in (self.activation, self.norm, self.dropout):
            layer.build(output_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.activation(self.conv(inputs))
        x = self.norm(x, training=training)
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return self.conv.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "padding": self.padding,
            "kernel_initializer": self.kernel_initializer,
            "dropout_rate": self.dropout_rate,
        }


class _Stack(_Composite):
    """Sublayers applied one after the other; ``training`` reaches those that take it."""

    _stack: list[layers.Layer]

    @property
    def sublayers(self) -> tuple[layers.Layer, ...]:
        return tuple(self._stack)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        for layer in self._stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        for layer in self._stack:
            x = layer(x, training=training) if isinstance(layer, ConvBlock) else layer(x)
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        shape = tuple(input_shape)
        for layer in self._stack:
            shape = layer.compute_output_shape(shape)
        return shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GeneratorBranch(_Stack):
    """One generator branch: 9 conv layers from the 5 x 5 stem to a 25 x 25 x 25 volume (spec 1.3).

    Conv(32, 5) -> ConvT(64, 5, stride 3) -> Conv(64, 5) -> ConvT(64, 5, stride 2) -> Conv(64, 8)
    -> Conv(64, 5, valid) -> Conv(32, 4) -> Conv(32, 3) -> Conv(25, 2, valid); every Conv is a
    :class:`ConvBlock`, the transposed convs have a bias and nothing after them. At ``width=1``:
    671,108 parameters (626 of them non-trainable BN statistics).

    Args:
        width: multiplier of the filter counts 32 and 64; the final 25 stays.

    Input shape: ``(N, 5, 5, C)``.
    Output shape: ``(N, 25, 25, 25)``: 5 -> 15 -> 30 -> 26 -> 25 pixels, 25 channels.
    """

    def __init__(self, width: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = _check_width(width)
        f32, f64 = _scaled(32, width), _scaled(64, width)

        def transpose(filters: int, strides: int, name: str) -> layers.Layer:
            return layers.Conv2DTranspose(filters, 5, strides=strides, padding="same", use_bias=True, name=name)

        self._stack = [
            ConvBlock(f32, 5, kernel_initializer="glorot_uniform", name="b1"),
            transpose(f64, 3, "b2a_up3"),
            ConvBlock(f64, 5, name="b2b"),
            transpose(f64, 2, "b3a_up2"),
            ConvBlock(f64, 8, name="b3b"),
            ConvBlock(f64, 5, padding="valid", name="b4"),
            ConvBlock(f32, 4, name="b5"),
            ConvBlock(f32, 3, name="b6"),
            ConvBlock(N_LAYERS, 2, padding="valid", name="b7"),
        ]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4 or tuple(input_shape[1:3]) != STEM_SHAPE[:2]:
            raise ValueError(f"GeneratorBranch expects (N, 5, 5, C). Received: input_shape={input_shape}")
        super().build(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiscriminatorBranch(_Stack):
    """One discriminator branch: 6 valid-shrinking conv blocks from 25 x 25 to 9 x 9 (spec 2.2).

    Conv(64, 8, same) -> Conv(32, 6) -> Conv(32, 5) -> Conv(32, 4) -> Conv(32, 3) -> Conv(9, 3), all
    but the first "valid", all :class:`ConvBlock` without bias. 230,724 parameters at ``width=1``.

    Args:
        width: multiplier of the filter counts 64 and 32; the final 9 stays (the merge relabels a
            9 x 9 x 9 volume, so the channel count must equal the pixel count).

    Input shape: ``(N, 25, 25, C)``.
    Output shape: ``(N, 9, 9, 9)``: 25 -> 20 -> 16 -> 13 -> 11 -> 9 pixels.
    """

    def __init__(self, width: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = _check_width(width)
        f32 = _scaled(32, width)
        self._stack = [
            ConvBlock(_scaled(64, width), 8, kernel_initializer="glorot_uniform", name="d1"),
            ConvBlock(f32, 6, padding="valid", name="d2"),
            ConvBlock(f32, 5, padding="valid", name="d3"),
            ConvBlock(f32, 4, padding="valid", name="d4"),
            ConvBlock(f32, 3, padding="valid", name="d5"),
            ConvBlock(9, 3, padding="valid", name="d6"),
        ]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4 or tuple(input_shape[1:3]) != (N_CELLS_X, N_CELLS_Y):
            raise ValueError(f"DiscriminatorBranch expects (N, 25, 25, C). Received: input_shape={input_shape}")
        super().build(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EnergySum(layers.Layer):
    """Sum of every cell of each input: the discriminator's parameter-free "ecal" head (spec 2.3).

    Replaces the original ``Lambda`` so the model stays loadable in Keras' safe mode.

    Input shape: ``(N, ...)`` cell energies, GeV.
    Output shape: ``(N, 1)``, GeV.
    """

    def call(self, inputs: Any) -> Any:
        flat = keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))
        return keras.ops.sum(flat, axis=1, keepdims=True)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 1)


@dataclass(frozen=True)
class GeneratorConfig:
    """What :func:`build_generator` needs; stored in run configs and model cards.

    Attributes
    ----------
    width : float
        Filter-count multiplier; 1.0 is the paper's network.
    output_relu : bool
        End with a ReLU (the paper's ``generator_ReLU``, the shipped model) or stay linear (its
        ``generator_LeakyReLU``, used in the first epochs of training, spec 3.3).
    output_scale : float
        Fixed factor on the merge conv's output, a ``Rescaling`` layer without weights (1.0, the
        default, adds no layer: the paper's graph). Training picks it so that an untrained generator
        already deposits the data's mean energy: raw GeV cells are ~1e-3 while Adam moves every weight
        by ~lr per step, so without it the first steps spend themselves on the overall scale. The
        3DGAN does the same with its data scale xscale = 100 (spec 6.3).
    """

    width: float = 1.0
    output_relu: bool = True
    output_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return cls(**data)


def _view(x: Any, view: str, name: str) -> Any:
    dims = _VIEWS[view][0]
    return x if dims == (1, 2, 3) else layers.Permute(dims, name=name)(x)


def _unview(x: Any, view: str, name: str) -> Any:
    dims = _VIEWS[view][1]
    return x if dims == (1, 2, 3) else layers.Permute(dims, name=name)(x)


def build_generator(config: GeneratorConfig | None = None) -> keras.Model:
    """The Conv2D generator: latent vector in, one shower out (spec 1.2-1.4).

    Dense(200 -> 125) -> reshape (5, 5, 5) -> three :class:`GeneratorBranch` views -> back to
    ``[x, y, layer]`` -> concatenate (25, 25, 75) -> Conv2D(25, 3, same, no bias) -> optional fixed
    scale -> optional ReLU.

    Parameters
    ----------
    config : GeneratorConfig, optional
        Width, output scale and activation; the default is the paper's network.

    Returns
    -------
    keras.Model
        Input ``latent``: float32, shape (N, 200), N(0, 1) x Ep / 100 GeV (see ``app.model.latent``).
        Output: float32, shape (N, 25, 25, 25), visible cell energy in GeV indexed ``[x, y, layer]``.
    """
    config = config or GeneratorConfig()
    width = _check_width(config.width)
    latent = keras.Input((LATENT_SIZE,), name="latent")
    x = layers.Dense(STEM_SHAPE[0] * STEM_SHAPE[1] * STEM_SHAPE[2], name="stem_dense")(latent)
    x = layers.Reshape(STEM_SHAPE, name="stem_reshape")(x)
    views = []
    for view in _VIEWS:
        y = _view(x, view, f"to_{view}")
        y = GeneratorBranch(width, name=f"branch_{view}")(y)
        views.append(_unview(y, view, f"from_{view}"))
    # 75 channels: three 25-deep estimates of the layer axis, one per view.
    x = layers.Concatenate(axis=-1, name="merge_views")(views)
    x = layers.Conv2D(
        N_LAYERS, 3, padding="same", use_bias=False, kernel_initializer="he_uniform", name="merge_conv"
    )(x)
    if config.output_scale != 1.0:
        if not (math.isfinite(config.output_scale) and config.output_scale > 0):
            raise ValueError(f"output_scale must be finite and > 0. Received: output_scale={config.output_scale}")
        x = layers.Rescaling(config.output_scale, name="output_scale")(x)
    if config.output_relu:
        x = layers.ReLU(name="output_relu")(x)
    return keras.Model(latent, x, name="conv2d_generator")


def with_output_relu(generator: keras.Model) -> keras.Model:
    """The same generator (shared layers and weights) followed by a ReLU.

    Training switches from the linear to the ReLU output after a few epochs (spec 3.3). Sharing the
    layers keeps the optimizer's variables valid across the switch.

    Parameters
    ----------
    generator : keras.Model
        A linear-output generator from :func:`build_generator`.

    Returns
    -------
    keras.Model
        Output float32 (N, 25, 25, 25) GeV, clipped at zero.
    """
    if any(layer.name == "output_relu" for layer in generator.layers):
        return generator
    output = layers.ReLU(name="output_relu")(generator.outputs[0])
    return keras.Model(generator.inputs[0], output, name=generator.name)


def build_discriminator(width: float = 1.0) -> keras.Model:
    """The Conv2D discriminator with its three heads (spec 2.1-2.3).

    Three :class:`DiscriminatorBranch` views -> back to one axis order -> concatenate (9, 9, 27)
    -> flatten 2,187 -> Dense(10) -> LeakyReLU(0.3) -> BatchNormalization -> heads.

    Parameters
    ----------
    width : float
        Filter-count multiplier; 1.0 is the paper's network (714,114 parameters).

    Returns
    -------
    keras.Model
        Input ``showers``: float32, shape (N, 25, 25, 25), GeV, ``[x, y, layer]``.
        Outputs, a dict of float32 arrays of shape (N, 1):

        - ``generation``: probability that the shower is real (sigmoid);
        - ``auxiliary``: regressed primary energy in units of 100 GeV (linear);
        - ``ecal``: sum of all input cells, GeV (no parameters).
    """
    width = _check_width(width)
    showers = keras.Input(SHOWER_SHAPE, name="showers")
    views = []
    for view in _VIEWS:
        y = _view(showers, view, f"to_{view}")
        y = DiscriminatorBranch(width, name=f"branch_{view}")(y)
        views.append(_unview(y, view, f"from_{view}"))
    x = layers.Concatenate(axis=-1, name="merge_views")(views)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(10, name="head_dense")(x)
    x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="head_leaky_relu")(x)
    x = layers.BatchNormalization(name="head_batch_norm")(x)
    outputs = {
        "generation": layers.Dense(1, activation="sigmoid", name="generation")(x),
        "auxiliary": layers.Dense(1, name="auxiliary")(x),
        "ecal": EnergySum(name="ecal")(showers),
    }
    return keras.Model(showers, outputs, name="conv2d_discriminator")


def iter_layers(layer: layers.Layer) -> Iterator[layers.Layer]:
    """Every layer inside ``layer`` (itself included), depth first, through models and branches."""
    yield layer
    children: Sequence[layers.Layer] = ()
    if isinstance(layer, keras.Model):
        children = layer.layers
    elif isinstance(layer, _Composite):
        children = layer.sublayers
    for child in children:
        yield from iter_layers(child)


def count_conv_layers(model: keras.Model) -> int:
    """Number of convolution layers (Conv2D, Conv2DTranspose, Conv3D, ...) anywhere in ``model``.

    The paper's table counts these: 28 for the Conv2D generator.
    """
    conv_types = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Conv2DTranspose, layers.Conv3DTranspose)
    return sum(isinstance(layer, conv_types) for layer in iter_layers(model))


__all__ = [
    "LATENT_SIZE",
    "ConvBlock",
    "DiscriminatorBranch",
    "EnergySum",
    "GeneratorBranch",
    "GeneratorConfig",
    "build_discriminator",
    "build_generator",
    "count_conv_layers",
    "iter_layers",
    "with_output_relu",
]
