"""The Grafana dashboard and the Prometheus rules ask only for series the running service exports.

Names are checked against a live ``/metrics`` of the real app (fake backend, after a few requests),
so a renamed metric, a forgotten ``_total``/``_bucket`` suffix or a label the service does not set
fails here instead of leaving an empty panel in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import promql
from tests.deploy.conftest import DASHBOARD_FILE, K8S, RULES_FILE

# Labels Prometheus attaches to every scraped series: job and instance always, the rest under the
# Prometheus Operator (ServiceMonitor), which prometheus-adapter needs (namespace, pod).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})


@pytest.fixture(scope="module")
def exported(live_exposition: str) -> dict[str, set[str]]:
    """Sample name -> label names, as the service exports them (``_total``, ``_bucket``... included)."""
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(live_exposition):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {panel.get('title')!r}", target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"variable ${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def unknown_names(
    expr: str, exported: dict[str, set[str]], rules: dict[str, str], _seen: frozenset[str] = frozenset()
) -> list[str]:
    """Problems with ``expr``: series the service does not export, undefined rules, labels it does not set."""
    problems: list[str] = []
    if not promql.series_names(expr):
        return problems  # not a calogan series (the optional DCGM panels): nothing to check it against
    known_labels = set(TARGET_LABELS)
    for name in promql.series_names(expr):
        if ":" in name:
            if name not in rules:
                problems.append(f"{name} is not a recording rule of {RULES_FILE.name}")
            elif name not in _seen:
                problems += [f"{name} -> {p}" for p in unknown_names(rules[name], exported, rules, _seen | {name})]
                known_labels |= promql.grouping_labels(rules[name])
        elif name not in exported:
            problems.append(f"{name} is not exported by the service")
        else:
            known_labels |= exported[name]
    for name, labels in promql.selector_labels(expr).items():
        allowed = TARGET_LABELS | exported.get(name, set()) | promql.grouping_labels(rules.get(name, ""))
        for rule_series in promql.series_names(rules.get(name, "")):
            allowed |= exported.get(rule_series, set())
        problems += [f"{name} has no label {label!r}" for label in sorted(labels - allowed)]
    unknown_grouping = sorted(promql.grouping_labels(expr) - known_labels)
    problems += [f"grouping by unknown label {label!r}" for label in unknown_grouping]
    return problems


def test_checker_catches_a_wrong_name(exported: dict[str, set[str]], recording_rules: dict[str, str]) -> None:
    # Counters are exported with _total: the bare family name is what a hand-written panel gets wrong.
    assert unknown_names("rate(calogan_showers[1m])", exported, recording_rules)
    assert unknown_names("job:calogan_nothing:rate1m", exported, recording_rules)
    assert unknown_names('sum(calogan_requests_total{code="503"})', exported, recording_rules)
    assert unknown_names("sum by (status) (rate(calogan_showers_total[1m]))", exported, recording_rules)
    assert not unknown_names('sum by (status) (rate(calogan_requests_total{status="503"}[1m]))', exported,
                             recording_rules)


def test_every_dashboard_expression_uses_exported_series(
    dashboard: dict[str, Any], exported: dict[str, set[str]], recording_rules: dict[str, str]
) -> None:
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) > 20
    problems = [f"{where}: {problem}" for where, expr in expressions
                for problem in unknown_names(expr, exported, recording_rules)]
    assert problems == []


def test_every_rule_and_alert_uses_exported_series(
    exported: dict[str, set[str]], recording_rules: dict[str, str]
) -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    problems = [
        f"{rule.get('record') or rule.get('alert')}: {problem}"
        for group in groups for rule in group["rules"]
        for problem in unknown_names(rule["expr"], exported, recording_rules)
    ]
    assert problems == []


def test_prometheus_adapter_rules_select_exported_series(exported: dict[str, set[str]]) -> None:
    configmap = yaml.safe_load((K8S / "prometheus-adapter" / "configmap.yaml").read_text())
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    for rule in rules:
        names = promql.series_names(rule["seriesQuery"])
        assert names, rule["seriesQuery"]
        assert names <= exported.keys(), rule["seriesQuery"]


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(expr for _, expr in dashboard_expressions(dashboard))
    for needed in (
        "calogan_showers_total", "calogan_requests_total", 'status="503"', "calogan_queued_showers",
        "calogan_batch_size_showers_bucket", "calogan_batch_duration_seconds", "calogan_response_size_bytes",
        "calogan_model_info", "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert needed in exprs, needed
    for histogram in ("calogan_request_duration_seconds_bucket", "calogan_queue_wait_seconds_bucket"):
        for quantile in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({quantile}, sum by (le) (rate({histogram}" in exprs, (histogram, quantile)
    gpu_titles = [p["title"] for p in _panels(dashboard["panels"]) if "DCGM" in json.dumps(p.get("targets", []))]
    assert gpu_titles
    assert all("optional" in title.lower() for title in gpu_titles)


def test_dashboard_is_well_formed_for_provisioning(dashboard: dict[str, Any]) -> None:
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]
    assert dashboard["title"]
    assert all({"h", "w", "x", "y"} <= panel["gridPos"].keys() for panel in panels)
    # Every query goes through the ${datasource} variable, so any Prometheus data source works.
    datasources = {json.dumps(t["datasource"]) for p in panels for t in p.get("targets", [])}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
