"""The networks of one GAN run, their optimizers and the compiled adversarial and warm-up steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.errors import InvalidRequest
from app.model.architecture import GeneratorConfig, build_discriminator, build_generator, with_output_relu
from app.model.latent import (
    ENERGY_SCALE_GEV,
    latent_vectors,
    training_energies,
)
from app.model.training.config import TrainConfig
from app.model.training.response import EnergyResponse
from app.physics.detector import FloatArray

_EPS = 2e-7  # the original losses' epsilon (spec 2.4)


class GanTrainer:
    """The networks, their optimizers and the compiled steps of one run.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    strategy : tf.distribute.Strategy, optional
        Where to build and run; the default strategy (one device) if omitted.
    """

    def __init__(self, config: TrainConfig, strategy: Any | None = None) -> None:
        import keras
        import tensorflow as tf

        self.config = config
        self._tf = tf
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        if config.batch_size % self.replicas:
            raise InvalidRequest(
                f"batch size {config.batch_size} does not split over {self.replicas} replicas",
                allowed=f"a multiple of {self.replicas}",
            )
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.generator = build_generator(GeneratorConfig(width=config.width, output_relu=False,
                                                             output_scale=config.output_scale or 1.0))
            self.generator_relu = with_output_relu(self.generator)
            self.discriminator = build_discriminator(config.width)
            self.opt_g = keras.optimizers.Adam(learning_rate=config.lr_generator)
            self.opt_d = keras.optimizers.Adam(learning_rate=config.lr_discriminator)
            self.opt_g.build(self.generator.trainable_variables)
            self.opt_d.build(self.discriminator.trainable_variables)
        self._steps: dict[bool, Any] = {}
        self._warmup_step: Any = None

    # -- losses (all tensors are per replica; dividing by the replica count makes the summed
    #    gradients those of the global-batch mean) --

    def _losses(self, outputs: dict[str, Any], labels: Any, ep100: Any, sum_gev: Any) -> dict[str, Any]:
        tf = self._tf
        p = outputs["generation"]
        bce = -tf.reduce_mean(labels * tf.math.log(p + _EPS) + (1.0 - labels) * tf.math.log(1.0 - p + _EPS))
        aux = 100.0 * tf.reduce_mean(tf.abs(ep100 - outputs["auxiliary"]) / (ep100 + _EPS))
        ecal = 100.0 * tf.reduce_mean(tf.abs(sum_gev - outputs["ecal"]) / (sum_gev + _EPS))
        w_bce, w_aux, w_ecal = self.config.loss_weights
        return {"loss": w_bce * bce + w_aux * aux + w_ecal * ecal, "bce": bce, "aux": aux, "ecal": ecal}

    def _replica_step(self, batch: dict[str, Any], relu: bool) -> dict[str, Any]:
        tf = self._tf
        generator = self.generator_relu if relu else self.generator
        d, training, scale = self.discriminator, self.config.bn_training, 1.0 / self.replicas
        d_vars, g_vars = d.trainable_variables, self.generator.trainable_variables
        with tf.GradientTape() as tape:
            real = self._losses(d(batch["real_cells"], training=training), batch["real_labels"],
                                batch["real_ep100"], batch["real_sum"])
            objective = real["loss"] * scale  # inside the tape, or it has no gradient
        self.opt_d.apply_gradients(zip(tape.gradient(objective, d_vars), d_vars, strict=True))
        fake_cells = tf.stop_gradient(generator(batch["d_latent"], training=training))
        with tf.GradientTape() as tape:
            fake = self._losses(d(fake_cells, training=training), batch["d_labels"], batch["d_ep100"],
                                batch["d_sum"])
            objective = fake["loss"] * scale
        self.opt_d.apply_gradients(zip(tape.gradient(objective, d_vars), d_vars, strict=True))
        with tf.GradientTape() as tape:
            gen = self._losses(d(generator(batch["g_latent"], training=training), training=training),
                               batch["g_labels"], batch["g_ep100"], batch["g_sum"])
            objective = gen["loss"] * scale
        self.opt_g.apply_gradients(zip(tape.gradient(objective, g_vars), g_vars, strict=True))
        out = {f"d_real_{k}": v for k, v in real.items()}
        out.update({f"d_fake_{k}": v for k, v in fake.items()})
        out.update({f"g_{k}": v for k, v in gen.items()})
        return {k: v * scale for k, v in out.items()}

    def _distributed(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        tf, strategy = self._tf, self.strategy

        def step(batch: dict[str, Any]) -> dict[str, Any]:
            per_replica = strategy.run(fn, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        # autograph off: the step has no tensor-dependent Python control flow to convert.
        return step if self.config.run_eagerly else tf.function(step, reduce_retracing=True, autograph=False)

    def _distribute_batch(self, batch: dict[str, FloatArray]) -> Any:
        if self.replicas == 1:
            return {k: self._tf.constant(v) for k, v in batch.items()}
        per_replica = self.config.batch_size // self.replicas

        def value_fn(ctx: Any) -> dict[str, Any]:
            start = ctx.replica_id_in_sync_group * per_replica
            return {k: self._tf.constant(v[start : start + per_replica]) for k, v in batch.items()}

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def train_step(self, batch: dict[str, FloatArray], *, relu: bool) -> dict[str, float]:
        """One D-real, D-fake and G update on a host batch (see :meth:`make_batch`); returns the losses."""
        if relu not in self._steps:
            self._steps[relu] = self._distributed(lambda b: self._replica_step(b, relu))
        return {k: float(v) for k, v in self._steps[relu](self._distribute_batch(batch)).items()}

    def make_batch(
        self, cells_gev: FloatArray, ep_gev: FloatArray, rng: np.random.Generator, *,
        response: EnergyResponse, energy_range_gev: tuple[float, float],
    ) -> dict[str, FloatArray]:
        """All inputs of one step, drawn on the host from ``rng`` (so a resumed run draws the same).

        Parameters
        ----------
        cells_gev : ndarray, shape (B, 25, 25, 25)
            Real showers, GeV.
        ep_gev : ndarray, shape (B,)
            Their primary energies, GeV.
        """
        c, n = self.config, len(ep_gev)

        def labels(value: float, flipped: float) -> FloatArray:
            flip = rng.random(n) < c.flip_probability
            return np.where(flip, flipped, value).astype(np.float32)[:, None]

        def fake_inputs(prefix: str, label: float, flipped: float) -> dict[str, FloatArray]:
            ep = training_energies(n, rng, energy_range_gev)
            return {
                f"{prefix}_latent": latent_vectors(ep, rng),
                f"{prefix}_ep100": (ep / ENERGY_SCALE_GEV)[:, None].astype(np.float32),
                f"{prefix}_sum": response.target_sum_gev(ep)[:, None],
                f"{prefix}_labels": labels(label, flipped),
            }

        cells = np.asarray(cells_gev, dtype=np.float32)
        batch = {
            "real_cells": cells,
            "real_ep100": (np.asarray(ep_gev, dtype=np.float32) / ENERGY_SCALE_GEV)[:, None],
            "real_sum": cells.reshape(n, -1).sum(axis=1, dtype=np.float64).astype(np.float32)[:, None],
            "real_labels": labels(c.real_label, 0.0),
        }
        batch.update(fake_inputs("d", c.fake_label, 1.0))
        batch.update(fake_inputs("g", c.real_label, 0.0))
        return batch

    # -- warm-up --

    def warmup_step(self, batch: dict[str, FloatArray], optimizer: Any) -> dict[str, float]:
        """One supervised generator step: total energy, normalised profiles and 3D shape towards the templates.

        ``batch`` holds ``latent`` (B, 200), ``sum`` (B,) target deposits in GeV, ``profiles``
        (B, 3, 25) and ``volume`` (B, 25, 25, 25) target mean shapes, each normalised to sum 1.
        """
        if self._warmup_step is None:
            # The ReLU output: a linear output's sum mixes signs, so its energy cannot be pulled to a target.
            tf, g = self._tf, self.generator_relu
            training = self.config.bn_training

            def relative_squared_error(value: Any, target: Any, axes: list[int]) -> Any:
                return tf.reduce_mean(tf.reduce_sum((value - target) ** 2, axis=axes)
                                      / tf.reduce_sum(target**2, axis=axes))

            def replica(b: dict[str, Any]) -> dict[str, Any]:
                with tf.GradientTape() as tape:
                    cells = g(b["latent"], training=training)
                    total = tf.reduce_sum(cells, axis=[1, 2, 3])
                    energy = tf.reduce_mean(tf.abs(total - b["sum"]) / (b["sum"] + _EPS))
                    # Divided by the target deposit, not the generated one: a young generator's sum
                    # can be near 0, which would blow the normalised shapes up.
                    normalised = cells / b["sum"][:, None, None, None]
                    shape = relative_squared_error(normalised, b["volume"], [1, 2, 3])
                    for axis, summed in enumerate(((2, 3), (1, 3), (1, 2))):
                        profile = tf.reduce_sum(normalised, axis=summed)
                        shape += relative_squared_error(profile, b["profiles"][:, axis], [1])
                    loss = energy + shape
                    objective = loss / self.replicas
                grads = tape.gradient(objective, g.trainable_variables)
                optimizer.apply_gradients(zip(grads, g.trainable_variables, strict=True))
                return {"warmup_loss": loss / self.replicas, "warmup_energy": energy / self.replicas,
                        "warmup_shape": shape / self.replicas}

            self._warmup_step = self._distributed(replica)
        return {k: float(v) for k, v in self._warmup_step(self._distribute_batch(batch)).items()}

    # -- inference and state --

    def generate(self, ep_gev: FloatArray, rng: np.random.Generator, batch_size: int = 256) -> FloatArray:
        """Showers (N, 25, 25, 25) GeV from the ReLU generator in inference mode, one per energy."""
        latent = latent_vectors(ep_gev, rng)
        out = [np.asarray(self.generator_relu(latent[i : i + batch_size], training=False))
               for i in range(0, len(latent), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def _groups(self) -> dict[str, list[Any]]:
        # model.variables includes Dropout's seed-generator states, so dropout resumes exactly.
        return {"generator": list(self.generator.variables), "discriminator": list(self.discriminator.variables),
                "opt_g": list(self.opt_g.variables), "opt_d": list(self.opt_d.variables)}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, BN statistics, seed states, Adam moments) by name."""
        return {f"{group}/{i:04d}": np.asarray(v.numpy()) for group, vs in self._groups().items()
                for i, v in enumerate(vs)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], groups: tuple[str, ...] | None = None) -> None:
        """Inverse of :meth:`state_arrays`; shapes must match the current networks."""
        for group, variables in self._groups().items():
            if groups is not None and group not in groups:
                continue
            stored = sorted(k for k in arrays if k.startswith(f"{group}/"))
            if len(stored) != len(variables):
                raise InvalidRequest(f"checkpoint holds {len(stored)} {group} variables, the network has "
                                     f"{len(variables)}", allowed="resume with the run's own settings")
            for key, variable in zip(stored, variables, strict=True):
                if tuple(arrays[key].shape) != tuple(variable.shape):
                    raise InvalidRequest(f"checkpoint {key} has shape {arrays[key].shape}, the network "
                                         f"{tuple(variable.shape)}", allowed="resume with the run's own settings")
                variable.assign(arrays[key])
