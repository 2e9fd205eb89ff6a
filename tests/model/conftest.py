"""Fixtures of the model tests: a small HDF5 training file and one tiny training run shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

TINY_RUN_ARGS = ("--tiny", "--eager", "--steps-per-epoch", "1", "--batch-size", "4", "--val-showers", "8",
                 "--seed", "3")


@pytest.fixture(scope="session")
def training_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated showers, 10-200 GeV, in the 3DGAN layout."""
    from app.physics.io import shower_file_attrs, write_showers
    from app.physics.mc import simulate_showers

    ep_gev = np.random.default_rng(11).uniform(10.0, 200.0, 40)
    path = tmp_path_factory.mktemp("data") / "train.h5"
    write_showers(path, simulate_showers(ep_gev, seed=12), ep_gev, attrs=shower_file_attrs(producer="test", seed=12))
    return path


def run_cli(*args: str) -> None:
    """Run a ``calogan`` command in-process (TensorFlow is imported once per session); fail on a non-zero exit."""
    from app.cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    if result.exit_code != 0:
        raise AssertionError(f"calogan {' '.join(args)} exited {result.exit_code}: {result.output}") from (
            result.exception
        )


@pytest.fixture(scope="session")
def tiny_run(training_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``calogan train --tiny``: one warm-up step and one epoch of one step, on the training file."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("train", "--out", str(run_dir), "--data", str(training_file), "--epochs", "1", "--warmup-steps", "1",
            *TINY_RUN_ARGS)
    return run_dir
