"""The Kubernetes manifests: valid against the Kubernetes schemas (offline), and consistent with the app.

Core kinds are validated strictly (unknown fields rejected) with kubernetes-validate's bundled
schemas; the Prometheus Operator and kustomize kinds against the small schemas in ``schemas/``.
The rest checks what no schema can: settings names, drain timing, probe paths, selectors, and the
HPA -> prometheus-adapter -> service metric chain.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.config import Settings
from app.serving.api.app import create_app
from tests.deploy.conftest import K8S, REPO, RULES_FILE, load_yaml_documents, settings_from_env
from tests.deploy.dockerfile import read_stages

KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())  # oldest we support, newest known
SCHEMAS = Path(__file__).parent / "schemas"
OWN_SCHEMAS = {
    "ServiceMonitor": "servicemonitor.json",
    "PrometheusRule": "prometheusrule.json",
    "Kustomization": "kustomization.json",
}
MANIFESTS = sorted(K8S.rglob("*.yaml"))


@functools.cache
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """(file, document) for every object under k8s/, kustomizations included (read once; do not modify)."""
    return [(path, doc) for path in MANIFESTS for doc in load_yaml_documents(path)]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    """name -> object, for every ``kind`` under k8s/."""
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Schema violations of one object: strict Kubernetes schemas, or our own for CRDs and kustomize."""
    if doc.get("kind") in OWN_SCHEMAS:
        schema = json.loads((SCHEMAS / OWN_SCHEMAS[doc["kind"]]).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"k8s {version}: {exc}")
    return errors


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid(path: Path) -> None:
    docs = load_yaml_documents(path)
    assert docs
    for doc in docs:
        assert validation_errors(doc) == [], f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"


def test_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(objects("Deployment")["calogan-gpu"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert validation_errors(deployment)
    monitor = copy.deepcopy(objects("ServiceMonitor")["calogan"])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert validation_errors(monitor)


@pytest.mark.parametrize("folder", [K8S, K8S / "prometheus-adapter"], ids=["k8s", "prometheus-adapter"])
def test_kustomization_lists_every_manifest_of_its_folder(folder: Path) -> None:
    (kustomization,) = load_yaml_documents(folder / "kustomization.yaml")
    listed = kustomization["resources"]
    present = sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def _deployment_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The CALOGAN_* environment of the container: ConfigMaps it loads, then its own env values."""
    configmaps = objects("ConfigMap")
    (container,) = _containers(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


@pytest.mark.parametrize(("name", "backend", "device"), [("calogan-gpu", "tf", "gpu"), ("calogan-cpu", "auto", "cpu")])
def test_deployment_settings_are_valid(name: str, backend: str, device: str) -> None:
    settings = settings_from_env(_deployment_env(objects("Deployment")[name]))
    assert (settings.backend, settings.device) == (backend, device)
    assert settings.tmp_dir == Path("/tmp")


@pytest.mark.parametrize("name", ["calogan-gpu", "calogan-cpu"])
def test_termination_grace_covers_the_drain(name: str) -> None:
    deployment = objects("Deployment")[name]
    settings = settings_from_env(_deployment_env(deployment))
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # SIGKILL must not come before the pause (endpoints removal) and the drain of in-flight work.
    drain_s = settings.drain_pause_s + settings.drain_timeout_s
    assert drain_s + 5 <= grace_s <= drain_s + 30
    assert settings.drain_pause_s > 0  # readiness must flip before the endpoints are gone


@pytest.mark.parametrize("name", ["calogan-gpu", "calogan-cpu"])
def test_probes_use_the_app_routes(name: str, tiny_settings: Settings) -> None:
    routes = set(create_app(tiny_settings).openapi()["paths"])  # no lifespan: nothing loads
    (container,) = _containers(objects("Deployment")[name])
    ports = {port["name"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert all(probe["path"] in routes and probe["port"] in ports for probe in probes.values())
    # The startup probe gives model load and warm-up minutes, not the liveness probe's seconds.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180


def test_gpu_deployment_asks_for_a_gpu_node_and_cpu_deployment_stays_off_them() -> None:
    deployments = objects("Deployment")
    gpu = deployments["calogan-gpu"]["spec"]["template"]["spec"]
    (gpu_container,) = gpu["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu["tolerations"])
    cpu = deployments["calogan-cpu"]["spec"]["template"]["spec"]
    (cpu_container,) = cpu["containers"]
    assert "nvidia.com/gpu" not in json.dumps(cpu_container["resources"])
    assert "tolerations" not in cpu
    assert cpu_container["resources"]["limits"]["cpu"] == cpu_container["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("name", ["calogan-gpu", "calogan-cpu"])
def test_pods_run_non_root_with_a_read_only_root_file_system(name: str) -> None:
    spec = objects("Deployment")[name]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    target = name.removeprefix("calogan-")
    (stage,) = [stage for stage in read_stages(REPO / "Dockerfile") if stage.name == target]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == stage.all("USER")[0].split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])  # CALOGAN_TMP_DIR
    assert container["image"].endswith(f"-{target}")
    assert spec["automountServiceAccountToken"] is False


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_services_budgets_and_autoscalers_point_at_the_deployments() -> None:
    deployments = objects("Deployment")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for service in objects("Service").values():
        chosen = [name for name, labels in pod_labels.items() if _selects(service["spec"]["selector"], labels)]
        assert chosen == [service["metadata"]["name"]]
        container_ports = {p["name"] for p in _containers(deployments[chosen[0]])[0]["ports"]}
        assert all(port["targetPort"] in container_ports for port in service["spec"]["ports"])
    for budget in objects("PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        chosen = [name for name, labels in pod_labels.items() if _selects(selector, labels)]
        assert chosen == [budget["metadata"]["name"]]
    for hpa in objects("HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        assert hpa["spec"]["minReplicas"] <= deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]["replicas"] \
            <= hpa["spec"]["maxReplicas"]


def test_service_monitor_scrapes_both_services() -> None:
    (monitor,) = objects("ServiceMonitor").values()
    services = objects("Service").values()
    selected = [s for s in services if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert len(selected) == 2
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)


def _adapter_metric_names() -> set[str]:
    configmap = yaml.safe_load((K8S / "prometheus-adapter" / "configmap.yaml").read_text())
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    names = set()
    for rule in rules:
        overrides = rule["resources"]["overrides"]
        assert {overrides["namespace"]["resource"], overrides["pod"]["resource"]} == {"namespace", "pod"}
        names.add(rule["name"]["as"])
    return names


def test_autoscalers_use_metrics_the_adapter_serves() -> None:
    served = _adapter_metric_names()
    for hpa in objects("HorizontalPodAutoscaler").values():
        pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert pods_metrics
        assert set(pods_metrics) <= served


def test_prometheus_rule_matches_the_compose_rules_file() -> None:
    (rule,) = objects("PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
