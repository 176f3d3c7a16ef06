"""deploy/kubernetes/: valid manifests, and a sidecar wired the way shadowtap's config needs.

Schemas come from `kubernetes-validate` (the OpenAPI schemas of each Kubernetes release); the
wiring checks read the ConfigMap's shadowtap.toml with shadowtap's own config loader, so a
change on either side that breaks the other fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from shadowtap.config import ENV_PATTERN, Config, parse_config, split_host_port
from shadowtap.server import SCORING_AFTER_GRACE_S

from tests.kustomize import (
    BASE,
    FLEET,
    REPO,
    by_kind,
    config_text,
    pod_specs,
    render,
    secret_env,
    shadowtap_container,
)

# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29.
OLDEST_KUBERNETES = "1.29"
CORE_KINDS = {
    "Deployment",
    "Service",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "NetworkPolicy",
}


def loaded_config(resources: list[dict[str, Any]]) -> Config:
    return parse_config(tomllib.loads(config_text(resources)), secret_env(resources))


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


@pytest.fixture(scope="module")
def fleet() -> list[dict[str, Any]]:
    return render(FLEET)


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None], ids=["oldest", "latest"])
@pytest.mark.parametrize("directory", [BASE, FLEET], ids=["base", "overlays/fleet"])
def test_manifests_validate_against_kubernetes_schemas(directory: Path, version: str | None):
    version = version or kubernetes_validate.latest_version()
    for manifest in render(directory):
        if manifest["kind"] not in CORE_KINDS:
            continue  # CRDs (ServiceMonitor) are checked below
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_base_applies_without_custom_resource_definitions(base):
    # Every kind of the base is in Kubernetes' own schema: a cluster without the Prometheus
    # Operator can apply it. (validate raises SchemaNotFoundError for a CRD kind.)
    version = kubernetes_validate.latest_version()
    for manifest in base:
        kubernetes_validate.validate(manifest, version, strict=True)
    assert not by_kind(base, "ServiceMonitor")


def test_the_validator_rejects_a_broken_probe(base):
    # A check that cannot fail proves nothing: a probe without a handler must be refused.
    (deployment,) = by_kind(base, "Deployment")
    container = deployment["spec"]["template"]["spec"]["initContainers"][0]
    saved = container["readinessProbe"]
    container["readinessProbe"] = {"httpGet": {"path": "/readyz"}}  # no port
    try:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)
    finally:
        container["readinessProbe"] = saved


def test_the_config_map_is_a_valid_shadowtap_config(base):
    config = loaded_config(base)
    assert config.candidates, "the example should shadow to at least one candidate"
    host, port = split_host_port(config.server.listen)
    assert host == "127.0.0.1", "only the application in the pod may use the proxy"
    admin_host, _ = split_host_port(config.server.admin_listen)
    assert admin_host == "0.0.0.0", "probes and Prometheus reach the admin port via the pod IP"
    # The application talks to the proxy port the config listens on.
    (spec,) = pod_specs(base)
    (app,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    base_url = urlsplit(env["OPENAI_BASE_URL"])
    assert base_url.hostname == "localhost" and base_url.port == port
    assert base_url.path == "/v1"


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for item in value for s in strings(item)] if isinstance(value, list) else []


def test_every_env_reference_in_the_config_comes_from_the_secret(base):
    names = {n for s in strings(tomllib.loads(config_text(base))) for n in ENV_PATTERN.findall(s)}
    assert names, "candidate keys are referenced as ${NAME}"
    assert names <= set(secret_env(base)), f"unset in the pod: {names - set(secret_env(base))}"
    # ...and keys only ever arrive as references: no literal secret in the ConfigMap.
    raw = tomllib.loads(config_text(base))
    for name, candidate in raw["candidates"].items():
        if "api_key" in candidate:
            assert ENV_PATTERN.fullmatch(candidate["api_key"]), f"candidates.{name}.api_key"
    assert ENV_PATTERN.fullmatch(raw["server"]["admin_token"]), "server.admin_token"
    assert loaded_config(base).server.admin_token is not None, "/api/* needs a token in the pod"


def test_probes_use_the_admin_port_of_the_config(base):
    container = shadowtap_container(base)
    _, admin_port = split_host_port(loaded_config(base).server.admin_listen)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"admin": admin_port}
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "admin"),
        "livenessProbe": ("/healthz", "admin"),
        "readinessProbe": ("/readyz", "admin"),
    }
    annotations = by_kind(base, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_sidecar_starts_before_and_stops_after_the_application(base):
    container = shadowtap_container(base)
    assert container["restartPolicy"] == "Always"  # a native sidecar, not a plain init step
    assert "startupProbe" in container


def test_termination_grace_covers_the_drain(base):
    config = loaded_config(base)
    (spec,) = pod_specs(base)
    # The grace bounds requests, uploads and shadows; then scoring, then the final flush.
    flush_s = config.storage.flush_interval_ms / 1000 + 5  # the last batch, plus writing it
    drain = config.server.shutdown_grace_s + SCORING_AFTER_GRACE_S + flush_s
    assert spec["terminationGracePeriodSeconds"] >= drain


def test_resources_and_an_unprivileged_read_only_container(base):
    container = shadowtap_container(base)
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][section])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    (spec,) = pod_specs(base)
    assert spec["securityContext"]["runAsNonRoot"] is True
    # The image's USER, so runAsNonRoot holds whichever sets it.
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user


def mounts(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there, with the mount's readOnly flag."""
    (spec,) = pod_specs(resources)
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {
        m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in shadowtap_container(resources)["volumeMounts"]
    }


def mount_for(path: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The volume holding `path`: the deepest mount above it."""
    candidates = [m for m in mounts(resources) if path == m or path.startswith(m.rstrip("/") + "/")]
    assert candidates, f"{path} is on the container's read-only root filesystem"
    return mounts(resources)[max(candidates, key=len)]


def test_config_is_mounted_where_the_image_reads_it(base):
    container = shadowtap_container(base)
    assert container["args"] == ["serve", "--config", "/etc/shadowtap/shadowtap.toml"]
    volume = mount_for("/etc/shadowtap/shadowtap.toml", base)
    (config_map,) = by_kind(base, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert volume["readOnly"] is True


def test_duckdb_and_parquet_are_on_writable_volumes(base, fleet):
    storage = loaded_config(base).storage
    assert storage.parquet_dir, "the example rolls Parquet segments for fleet reports"
    for path in (storage.path, storage.parquet_dir):
        volume = mount_for(path, base)
        assert volume["readOnly"] is False and "emptyDir" in volume, path
    # The fleet overlay puts the Parquet segments, and only them, on the shared claim.
    shared = mount_for(storage.parquet_dir, fleet)
    claim = shared["persistentVolumeClaim"]["claimName"]
    (pvc,) = by_kind(fleet, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "emptyDir" in mount_for(storage.path, fleet), "DuckDB allows one writer per file"


def test_the_admin_service_and_service_monitor_select_the_sidecar(fleet):
    (deployment,) = by_kind(fleet, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = by_kind(fleet, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "admin"
    (monitor,) = by_kind(fleet, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")
    # With a ServiceMonitor, annotation-based discovery is switched off: no double scrape.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false"


def opens_port(rule: dict[str, Any], names: set[str], number: int) -> bool:
    """Whether a NetworkPolicy ingress rule lets traffic in to this port."""
    if not rule.get("ports"):
        return True  # a rule without ports opens every port
    for port in rule["ports"]:
        value = port.get("port")
        if value is None or value in names or value == number:
            return True
        if isinstance(value, int) and value <= number <= port.get("endPort", value):
            return True
    return False


@pytest.mark.parametrize("overlay", ["base", "fleet"])
def test_only_prometheus_reaches_the_admin_port(overlay, request):
    resources = request.getfixturevalue(overlay)
    (policy,) = by_kind(resources, "NetworkPolicy")
    (deployment,) = by_kind(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    _, admin_port = split_host_port(loaded_config(resources).server.admin_listen)
    container = shadowtap_container(resources)
    names = {p["name"] for p in container["ports"] if p["containerPort"] == admin_port}
    rules = [r for r in policy["spec"]["ingress"] if opens_port(r, names, admin_port)]
    assert rules, "Prometheus must still reach /metrics"
    for rule in rules:
        assert rule.get("from"), "no rule may open the admin port to every source"
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    # The application's own ports stay open to its clients: the policy isolates the whole pod.
    (spec,) = pod_specs(resources)
    for app in spec["containers"]:
        for port in app.get("ports", []):
            assert any(
                not r.get("from") and opens_port(r, {port["name"]}, port["containerPort"])
                for r in policy["spec"]["ingress"]
            ), f"{app['name']}:{port['name']} is cut off by the policy"


def test_the_policy_check_catches_an_admin_port_open_to_all(base):
    # A check that cannot fail proves nothing: an open rule on the admin port must be caught.
    (policy,) = by_kind(base, "NetworkPolicy")
    rule = {"ports": [{"port": 9000, "endPort": 9500, "protocol": "TCP"}]}
    assert opens_port(rule, {"admin"}, 9464) and not rule.get("from")
    assert not opens_port({"ports": [{"port": "http"}]}, {"admin"}, 9464)
    assert opens_port({"from": [{"podSelector": {}}]}, {"admin"}, 9464)
    assert policy["spec"]["ingress"]
