"""The serve, generate and pull commands: one clear line on bad input, the service's own showers offline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import Settings
from app.physics.io import read_showers
from app.serving.api.app import create_app
from app.serving.backends import FakeBackend
from app.serving.batcher import spectrum_energies
from app.serving.client import chunk_seed
from tests.serving.helpers import expected_showers, live_server

runner = CliRunner()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, check=False,
                          env=env, timeout=120)


@pytest.mark.integration
def test_serve_without_a_shipped_model_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--model-dir", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "no shipped model" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_serve_with_bad_settings_fails_with_one_line() -> None:
    result = run_cli("serve", "--max-batch-size", "0")
    assert result.returncode == 2
    assert "max_batch_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_writes_the_showers_the_service_would_send(
    tmp_path: Path, latent_fn: Callable[..., Any]
) -> None:
    out = tmp_path / "gen.h5"
    result = runner.invoke(cli, ["generate", "--backend", "fake", "--energy", "100", "-n", "130", "--seed", "5",
                                 "--batch-size", "64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    showers = read_showers(out)
    np.testing.assert_array_equal(showers.cells_gev, expected_showers(np.full(130, 100.0), 5, latent_fn))
    assert showers.attrs["seed"] == 5
    assert showers.attrs["producer"] == "calogan-generate"


def test_generate_a_spectrum(tmp_path: Path, latent_fn: Callable[..., Any]) -> None:
    out = tmp_path / "flat.h5"
    result = runner.invoke(cli, ["generate", "--backend", "fake", "--emin", "10", "--emax", "400", "-n", "40",
                                 "--seed", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    energies = spectrum_energies(40, emin_gev=10.0, emax_gev=400.0, seed=2, limits_gev=(2.0, 500.0))
    showers = read_showers(out)
    np.testing.assert_allclose(showers.ep_gev, energies, rtol=1e-6)
    np.testing.assert_array_equal(showers.cells_gev, expected_showers(energies, 2, latent_fn))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--energy", "1000"], "out of range"), (["--energy", "10", "--emin", "5"], "either"),
     (["--emin", "5"], "both --emin and --emax"), (["-n", "0", "--energy", "10"], "number of showers")],
)
def test_generate_refuses_bad_input(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = runner.invoke(cli, ["generate", "--backend", "fake", "-o", str(tmp_path / "x.h5"), *args])
    assert result.exit_code != 0
    assert fragment in str(result.exception)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.integration
def test_pull_command_fills_and_resumes(tiny_settings: Settings, tmp_path: Path, latent_fn: Callable[..., Any]) -> None:
    out = tmp_path / "pulled.h5"
    with live_server(create_app(tiny_settings, FakeBackend())) as url:
        args = ["pull", "--url", url, "--energy", "40", "-n", "30", "--chunk", "20", "--seed", "9", "-o", str(out)]
        first = runner.invoke(cli, args)
        again = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output
    assert "resumed" in again.output
    assert "0 fetched now" in again.output
    cells = read_showers(out).cells_gev
    np.testing.assert_array_equal(cells[20:], expected_showers(np.full(10, 40.0), chunk_seed(9, 1), latent_fn))
    # Not a terminal (a batch job's log): one plain progress line per chunk, with rate and ETA.
    assert "pulled 30/30 showers" in first.output
    assert "showers/s, ETA" in first.output


def test_pull_exits_with_a_code_per_failure_kind(tiny_settings: Settings, tmp_path: Path) -> None:
    with live_server(create_app(tiny_settings, FakeBackend())) as url:
        args = ["pull", "--url", url, "--energy", "40", "-n", "4", "-o", str(tmp_path / "a.h5")]
        assert runner.invoke(cli, args).exit_code == 0
        # The file holds the fake model's showers; pinned to another sha, the server refuses with 409.
        import h5py

        with h5py.File(tmp_path / "a.h5", "a") as f:
            f.attrs["model_sha256"] = "f" * 64
            f.attrs["n_requested"] = 8
        changed = runner.invoke(cli, [*args[:-4], "-n", "8", "-o", str(tmp_path / "a.h5")])
    assert changed.exit_code == 5, changed.output
    assert "calogan pull failed" in changed.output
    dead = runner.invoke(cli, ["pull", "--url", "http://127.0.0.1:9", "--energy", "40", "-n", "4", "-o",
                               str(tmp_path / "b.h5"), "--retries", "3", "--deadline", "1"])
    assert dead.exit_code == 4, dead.output  # a dead port: the deadline stops the retries
