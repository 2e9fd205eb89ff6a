"""docker-compose.yml: the service, Prometheus with the repo's config and rules, Grafana provisioned.

No Docker engine here: the file is read as YAML and every path it mounts is checked against the
repository and against what Prometheus and Grafana will look for inside their containers.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO, settings_from_env


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repo), for the bind mounts of a service."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("./"):
            found[container] = host.removeprefix("./")
    return found


def test_service_is_the_cpu_image_read_only_with_a_tmpfs(services: dict[str, Any]) -> None:
    calogan = services["calogan"]
    assert calogan["build"]["target"] == "cpu"
    assert calogan["read_only"] is True
    assert any(entry.startswith("/tmp") for entry in calogan["tmpfs"])
    assert calogan["cap_drop"] == ["ALL"]
    settings_from_env(calogan.get("environment", {}))  # only real CALOGAN_* settings
    # Compose's default 10 s would SIGKILL in the middle of the drain.
    assert int(calogan["stop_grace_period"].removesuffix("s")) > settings_from_env({}).drain_timeout_s


def test_prometheus_reads_the_repo_config_and_rules(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_in_container = PurePosixPath(config_flag.split("=", 1)[1])
    host_dir = REPO / mounts[str(config_in_container.parent)]
    config = yaml.safe_load((host_dir / config_in_container.name).read_text())
    assert host_dir == DEPLOY / "prometheus"
    for rule_file in config["rule_files"]:
        assert (host_dir / rule_file).is_file(), rule_file
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "calogan"]
    assert job["dns_sd_configs"][0]["names"] == ["calogan"]  # the compose service, every replica


def test_grafana_is_provisioned_with_the_data_source_and_dashboard(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{services['prometheus']['ports'][0].rsplit(':', 1)[1]}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "calogan.yml").read_text())["providers"]
    dashboards_dir = REPO / mounts[provider["options"]["path"]]
    assert (dashboards_dir / "calogan.json").is_file()
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(provider["options"]["path"])
    # No default admin password in the file: compose refuses to start without one.
    assert ":?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_published_ports_stay_on_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
