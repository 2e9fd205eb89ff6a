"""Training of the Conv2D GAN generator: the tooling, never imported by the service.

Modules, one job each (``app.serving`` must not import this package; it may import ``app.physics``,
``app.validation`` and ``app.model``'s architecture, latent and loading modules):

- :mod:`.config`: :class:`TrainConfig` and the run folder's file names; :mod:`.response`: r(Ep);
- :mod:`.sources`: real showers (simulator or HDF5); :mod:`.selection`: the best-epoch metric;
- :mod:`.trainer`: the networks and compiled steps; :mod:`.warmup`: the supervised warm-up;
- :mod:`.run_files`: checkpoints and the CSV log; :mod:`.run`: :func:`train`, a whole run;
- :mod:`.shower_features` and :mod:`.fluctuations`: the distribution-matching stage (``calogan finetune``).

Import what you need from its module (``from app.model.training.run import train``): this file imports
nothing, so that a light submodule (the settings the CLI reads its defaults from) does not pull in
TensorFlow.

The adversarial recipe, as :func:`app.model.training.run.train` runs it:

Adversarial training of the Conv2D GAN, following the authors' recipe (spec section 3) on our data.

What one epoch does: ``steps_per_epoch`` times, draw ``batch_size`` real showers, then

1. update D on the real batch (label 0.9, 5 % flipped to 0; energy target Ep/100; ECAL target = the
   real pixel sum, so that loss is 0 there);
2. update D on a fake batch (fresh noise and energies; label 0, 5 % flipped to 1; ECAL target r(Ep) Ep);
3. update G once through D (fresh noise and energies; label 0.9 with 5 % flips), as the Conv2D GPU
   script does (spec 8, item 8).

Each loss is 6 BCE + 0.2 AUX + 0.1 ECAL (spec 2.4). After the epoch the generator makes one shower
per held-out validation shower at the same energy (fixed noise), a physics metric compares them, the
epoch is checkpointed, and the best epoch so far is kept. At the end ``generator.keras`` holds the
best generator, with its output ReLU.

Recipe choices, each recorded in ``run_config.json``:

- Learning rate (spec 3.2): the original holds lr0 for 81 "files" (of about 9,000 training showers
  each) and then multiplies it by exp(-0.012) per file. Here the file index is continuous,
  ``showers_seen / file_showers``, and the rate is set before every step. ``file_showers`` defaults
  to the paper's 9,000; a short run that should go through the paper's whole schedule (600 files)
  sets it to total_showers / 600. Adam keeps its state across files (the original re-created Adam
  per file; spec 8, item 7).
- Output ReLU curriculum (spec 3.3): linear output before ``relu_from_epoch``, ReLU from then on. The
  two generators share every layer, so the weights and Adam state carry over.
- Fake energies: U(100, 400) GeV during the first ``narrow_energy_epochs`` epochs, then U(2, 500).
- BatchNorm and Dropout run in inference mode by default (``bn_training=False``), as in the authors'
  runs, where BN never updated its statistics (spec 1.6, 8 item 2), so each BN is a learned affine
  map. Measured reason, not only fidelity: the energy enters only as the scale of the latent
  (z x Ep/100), and with inference-mode BN, bias-free convs and LeakyReLU the untrained generator is
  nearly homogeneous in Ep (sum/Ep varies by 17 % from 10 to 400 GeV), whereas training-mode BN
  normalises the scale away (sum/Ep 10x higher at 10 GeV than at 400 GeV); a 60-step warm-up then
  reached a 13 % energy-scale error against 70 % after 100 steps with training-mode BN.
  ``bn_training=True`` remains available.
- ECAL target: GetEcalFit describes CERN's data, not ours (spec 2.4), so the run refits
  r(Ep) = sum / Ep as a polynomial in log(Ep / 100 GeV) to its own training data at the start.
- Output scale (``output_scale``): an untrained generator deposits about 3 Ep, some 130 times the
  data's r(Ep) Ep. A fixed, weightless factor after the merge conv (chosen at the start, stored in the
  config and in the shipped model) starts it at the right mean deposit; see :func:`calibrated_output_scale`.
- Optional warm-up: ``warmup_steps`` supervised generator steps before the adversarial phase, pulling
  the total energy to r(Ep) Ep, and the normalised x, y, layer profiles and the normalised 3D shower
  to the training data's mean ones in 12 log-energy bins, with energies uniform in log(Ep), at a
  learning rate that falls from ``lr_generator`` to 5 % of it (cosine). It costs
  about a third of a GAN step and gives the adversarial phase a generator that already makes
  shower-like volumes; it teaches the mean shower per energy, not the shower-to-shower fluctuations.
  It is validated every ``steps_per_epoch`` steps (the best block competes for "best generator");
  ``epochs=0`` makes a warm-up-only run.
- Optional ``init_generator``: start from a trained generator (a ``generator.keras`` or a model
  folder) instead of random weights, with its output scale; it is scored before the first warm-up
  step, so a further stage can only ship something better. The discriminator and the optimizers start
  fresh: a shipped model carries no optimizer state (the authors, for their part, re-created Adam
  for every file).
- The finished warm-up is checkpointed as epoch 0, so ``--resume --epochs N`` turns a warm-up-only
  run into an adversarial one; an interrupted warm-up is not resumable (start it again).

Randomness: every draw comes from a numpy Generator seeded by ``SeedSequence([seed, epoch, stream])``,
so the state at the start of any epoch is known from (seed, epoch) alone and resuming repeats
exactly what an uninterrupted run draws. Weight init and Dropout use Keras' seeded generators, whose
states are model variables and therefore checkpointed.

The train step also runs under ``tf.distribute.MirroredStrategy``: pass a strategy, the batch is
split across replicas and each replica's loss is divided by the replica count (the optimizer sums
gradients over replicas).
"""
