"""The Kustomize renderer in tests/kustomize.py renders like Kustomize and refuses what it lacks."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.kustomize import (
    BASE,
    FLEET,
    Manifest,
    by_kind,
    kustomize_hash,
    render,
)


@pytest.mark.parametrize("directory", [BASE, FLEET], ids=["base", "overlays/fleet"])
def test_renderer_matches_kubectl_kustomize(directory: Path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer cannot be compared with Kustomize")
    printed = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    theirs = [d for d in yaml.safe_load_all(printed) if d]

    def key(doc: Manifest) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    ours = render(directory)
    assert sorted(map(key, ours)) == sorted(map(key, theirs))
    assert sorted(ours, key=key) == sorted(theirs, key=key)


def test_config_map_name_changes_with_its_content():
    # The hash suffix is what rolls the pods on a config change.
    base = render(BASE)
    (config_map,) = by_kind(base, "ConfigMap")
    changed = copy.deepcopy(config_map)
    changed["data"]["shadowtap.toml"] += "\n# edited\n"
    assert kustomize_hash(changed) != kustomize_hash(config_map)
    (deployment,) = by_kind(base, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["shadowtap-config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"].startswith("shadowtap-config-")


def test_renderer_refuses_features_it_does_not_implement(tmp_path: Path):
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "namespace: elsewhere\nresources: []\n"
    )
    with pytest.raises(AssertionError, match="namespace"):
        render(tmp_path)
