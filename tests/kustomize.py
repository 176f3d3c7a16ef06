"""A small Kustomize renderer for deploy/kubernetes/ (tests/test_deploy_kustomize.py proves it
renders like Kustomize), and readers of what it renders.

The other deploy tests validate what `kubectl apply -k` would send, so they need the rendered
manifests without a Kubernetes toolchain. This renders exactly the features the kustomizations
use — `resources` (files and directories), `components`, `configMapGenerator` (files, with
Kustomize's content-hash name suffix and the references to it rewritten) and JSON 6902 `patches`
with a kind/name target — and refuses any other field, so a new feature in a kustomization fails
here instead of being silently ignored. Where `kubectl` is installed, the output is compared with
`kubectl kustomize`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
KUSTOMIZE_ROOT = REPO / "deploy" / "kubernetes"
BASE = KUSTOMIZE_ROOT / "base"
FLEET = KUSTOMIZE_ROOT / "overlays" / "fleet"
SUPPORTED = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "patches"}

Manifest = dict[str, Any]


def render(directory: Path) -> list[Manifest]:
    """The manifests `kubectl kustomize DIRECTORY` prints, in resource order."""
    resources, generated = _build(directory, component=False)
    return _fix_config_map_references(resources, generated)


def _load_kustomization(directory: Path, *, component: bool) -> dict[str, Any]:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    expected = "Component" if component else "Kustomization"
    assert doc["kind"] == expected, f"{directory}: kind {doc['kind']!r}, expected {expected}"
    unsupported = set(doc) - SUPPORTED
    assert not unsupported, f"{directory}: the test renderer does not implement {unsupported}"
    return doc


def _build(directory: Path, *, component: bool) -> tuple[list[Manifest], dict[str, str]]:
    doc = _load_kustomization(directory, component=component)
    resources: list[Manifest] = []
    generated: dict[str, str] = {}  # ConfigMap name -> name with hash suffix
    for entry in doc.get("resources", []):
        path = directory / entry
        if path.is_dir():
            sub_resources, sub_generated = _build(path, component=False)
            resources += _fix_config_map_references(sub_resources, sub_generated)
        else:
            resources += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for entry in doc.get("components", []):
        _apply_component(directory / entry, resources, generated)
    for entry in doc.get("configMapGenerator", []):
        config_map = _generate_config_map(directory, entry)
        generated[entry["name"]] = config_map["metadata"]["name"]
        resources.append(config_map)
    for patch in doc.get("patches", []):
        _apply_patch(directory, patch, resources)
    return resources, generated


def _apply_component(directory: Path, resources: list[Manifest], generated: dict[str, str]):
    # A component adds its resources to, and runs its patches over, the including kustomization.
    doc = _load_kustomization(directory, component=True)
    for entry in doc.get("resources", []):
        path = directory / entry
        resources += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for entry in doc.get("configMapGenerator", []):
        config_map = _generate_config_map(directory, entry)
        generated[entry["name"]] = config_map["metadata"]["name"]
        resources.append(config_map)
    for patch in doc.get("patches", []):
        _apply_patch(directory, patch, resources)


def kustomize_hash(config_map: Manifest) -> str:
    """Kustomize's name suffix for a generated ConfigMap (sigs.k8s.io/kustomize/api/hasher).

    Kustomize looks the name up with a path its YAML library does not resolve, so the name it
    hashes is always empty; `kubectl kustomize` agrees (test below).
    """
    encoded = {"kind": "ConfigMap", "name": "", "data": config_map.get("data", {})}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes these for HTML safety.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _generate_config_map(directory: Path, entry: dict[str, Any]) -> Manifest:
    unsupported = set(entry) - {"name", "files"}
    assert not unsupported, f"configMapGenerator: the renderer does not implement {unsupported}"
    data = {}
    for item in entry["files"]:
        key, _, source = item.rpartition("=") if "=" in item else ("", "", item)
        data[key or Path(source).name] = (directory / source).read_text(encoding="utf-8")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": data}
    config_map["metadata"]["name"] = f"{entry['name']}-{kustomize_hash(config_map)}"
    return config_map


def _apply_patch(directory: Path, patch: dict[str, Any], resources: list[Manifest]) -> None:
    target = patch["target"]
    assert set(target) <= {"kind", "name"}, f"patch target {target}: only kind and name"
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    assert isinstance(operations, list), "only JSON 6902 patches (a list of operations)"
    matched = [
        r
        for r in resources
        if r["kind"] == target.get("kind", r["kind"])
        and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])
    ]
    assert matched, f"patch target {target} matches no resource"
    for resource in matched:
        for operation in operations:
            _json_patch(resource, operation)


def _json_patch(document: Manifest, operation: dict[str, Any]) -> None:
    """RFC 6902 add / replace / remove on one document."""
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        if op == "add":
            value = copy.deepcopy(operation["value"])
            node.append(value) if last == "-" else node.insert(int(last), value)
        elif op == "replace":
            node[int(last)] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[int(last)]
        else:
            raise AssertionError(f"JSON patch op {op!r} is not implemented")
    elif op in ("add", "replace"):
        assert op == "add" or last in node, f"replace of missing {operation['path']}"
        node[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[last]
    else:
        raise AssertionError(f"JSON patch op {op!r} is not implemented")


def pod_specs(resources: list[Manifest]) -> list[dict[str, Any]]:
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    return [r["spec"]["template"]["spec"] for r in resources if r["kind"] in kinds]


def _fix_config_map_references(
    resources: list[Manifest], generated: dict[str, str]
) -> list[Manifest]:
    def rename(ref: dict[str, Any] | None) -> None:
        if ref and ref.get("name") in generated:
            ref["name"] = generated[ref["name"]]

    for spec in pod_specs(resources):
        for volume in spec.get("volumes", []):
            rename(volume.get("configMap"))
            for source in volume.get("projected", {}).get("sources", []):
                rename(source.get("configMap"))
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for env_from in container.get("envFrom", []):
                rename(env_from.get("configMapRef"))
            for env in container.get("env", []):
                rename(env.get("valueFrom", {}).get("configMapKeyRef"))
    return resources


def by_kind(resources: list[Manifest], kind: str) -> list[Manifest]:
    return [r for r in resources if r["kind"] == kind]


def shadowtap_container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    (spec,) = pod_specs(resources)
    (container,) = [c for c in spec.get("initContainers", []) if c["name"] == "shadowtap"]
    return container


def config_text(resources: list[dict[str, Any]]) -> str:
    (config_map,) = by_kind(resources, "ConfigMap")
    return config_map["data"]["shadowtap.toml"]


def secret_env(resources: list[dict[str, Any]]) -> dict[str, str]:
    """What the sidecar gets from Secrets through envFrom (with the placeholder values)."""
    secrets = {s["metadata"]["name"]: s for s in by_kind(resources, "Secret")}
    env: dict[str, str] = {}
    for source in shadowtap_container(resources).get("envFrom", []):
        secret = secrets[source["secretRef"]["name"]]
        env.update(secret.get("stringData", {}))
    return env
