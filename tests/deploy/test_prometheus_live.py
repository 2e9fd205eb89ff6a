"""A real Prometheus scrapes the real service with the repo's scrape config and recording rules.

The service (real app, fake backend) runs with uvicorn in a thread; the ``prometheus`` binary (Debian's
package, installed by ``.ci/run``) runs on a free port with deploy/prometheus/prometheus.yml, changed
only where a test must: the target address and 1 s intervals. After a few requests, PromQL over HTTP
must report a positive showers/s, through both the raw counter and the recording rule the dashboard
and alerts use.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import Settings
from tests.deploy.conftest import DASHBOARD_FILE, DEPLOY, fake_app, required_tool
from tests.deploy.test_dashboard import dashboard_expressions
from tests.serving.helpers import live_server

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 60.0  # safety nets only: each wait ends as soon as its condition holds
SCRAPE_TIMEOUT_S = 30.0


def poll_until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Ask ``predicate`` ten times a second until true (Prometheus is a separate process: no busy polling)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:  # the OS picks; freed for Prometheus to take
        return int(sock.getsockname()[1])


def derived_config(repo_config: Path, target: str) -> dict[str, Any]:
    """The repo's Prometheus config with the calogan job aimed at ``target`` and 1 s intervals."""
    config = yaml.safe_load(repo_config.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str((repo_config.parent / path).resolve()) for path in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "calogan"]
    for discovery in [key for key in job if key.endswith("_sd_configs")]:
        del job[discovery]  # compose's DNS discovery: here there is one known address
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    return config


@pytest.fixture
def service_url(tiny_settings: Settings) -> Iterator[str]:
    with live_server(fake_app(tiny_settings)) as url:
        yield url


@pytest.fixture
def prometheus_url(service_url: str, tmp_path: Path) -> Iterator[str]:
    binary = required_tool("prometheus", install_hint="apt-get install prometheus; .ci/run does")
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(derived_config(DEPLOY / "prometheus" / "prometheus.yml",
                                                      service_url.removeprefix("http://"))))
    port = _free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        poll_until(lambda: _ready(url) or process.poll() is not None, timeout_s=STARTUP_TIMEOUT_S,
                   what="Prometheus ready")
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log_path.read_text()}", pytrace=False)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant PromQL query over Prometheus' HTTP API; the result vector."""
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(prometheus_url: str, promql: str) -> float:
    """The single value of ``promql``, or 0 while Prometheus has none."""
    result = query(prometheus_url, promql)
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_sees_showers_per_second(service_url: str, prometheus_url: str) -> None:
    # First a scrape that sees the counters at zero, so that the rate below has two points.
    poll_until(lambda: scalar(prometheus_url, 'up{job="calogan"}') == 1.0, timeout_s=SCRAPE_TIMEOUT_S,
               what="the calogan target up")
    for energy in (10, 50, 100):
        response = httpx.post(f"{service_url}/simulate", params={"energy": energy, "n": 20}, timeout=30)
        assert response.status_code == 200
    poll_until(lambda: scalar(prometheus_url, "sum(calogan_showers_total)") == 60.0, timeout_s=SCRAPE_TIMEOUT_S,
               what="a scrape after the requests")

    raw = scalar(prometheus_url, 'sum(rate(calogan_showers_total{job="calogan"}[1m]))')
    assert raw > 0
    poll_until(lambda: scalar(prometheus_url, 'job:calogan_showers:rate1m{job="calogan"}') > 0,
               timeout_s=SCRAPE_TIMEOUT_S, what="the recording rule job:calogan_showers:rate1m")
    # The dashboard's latency panels: a real quantile out of the service's histogram.
    p99 = scalar(
        prometheus_url, "histogram_quantile(0.99, sum by (le) (rate(calogan_request_duration_seconds_bucket[1m])))"
    )
    assert 0 < p99 < 600
    # Every recording rule evaluates without error (one that fails is logged, and yields nothing).
    rules = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r.get("health") == "err"]
    assert unhealthy == []
    # Every dashboard query is valid PromQL for a real Prometheus (Grafana's variables filled in).
    for where, expr in dashboard_expressions(json.loads(DASHBOARD_FILE.read_text())):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        promql = expr.replace("$__rate_interval", "1m").replace("$job", ".*")
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
        assert response.status_code == 200, f"{where}: {response.text}"
