"""Linters over the deployment files (yamllint, promtool), and the skip-or-fail rule for missing tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.conftest import DEPLOY, K8S, REPO, RULES_FILE, required_tool

YAML_FILES = sorted(
    [REPO / "docker-compose.yml", REPO / ".yamllint.yaml", *DEPLOY.rglob("*.yml"), *K8S.rglob("*.yaml")]
)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_is_lint_clean(path: Path) -> None:
    config = YamlLintConfig(file=str(REPO / ".yamllint.yaml"))
    problems = [f"{p.line}:{p.column} {p.message} ({p.rule})" for p in linter.run(path.read_text(), config)]
    assert problems == []


def test_promtool_accepts_the_config_and_rules() -> None:
    promtool = required_tool("promtool", install_hint="apt-get install prometheus; .ci/run does")
    for args in (["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["check", "rules", str(RULES_FILE)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_missing_tool_skips_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        required_tool("calogan-no-such-tool", install_hint="none")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        required_tool("calogan-no-such-tool", install_hint="none")
