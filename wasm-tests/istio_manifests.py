"""The Istio manifests in envoy/istio/, parsed, and the pieces of them the tests use.

test_istio.py checks their structure; test_ecds.py runs the gateway's filter, routes and
failover hop in a real Envoy, taken from here, so the manifests cannot drift from the tests.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from typing import Any, Optional

import yaml

from harness import REPO

ISTIO_DIR = os.path.join(REPO, "envoy", "istio")
GATEWAY_YAML = os.path.join(ISTIO_DIR, "gateway.yaml")
SIDECAR_YAML = os.path.join(ISTIO_DIR, "sidecar.yaml")
PROVIDERS_YAML = os.path.join(ISTIO_DIR, "providers.yaml")
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
#: The manifests' placeholders (make istio fills them in).
WASM_URL_PLACEHOLDER = "https://wasm.example.com/llm_router.wasm"
WASM_CLUSTER_PLACEHOLDER = "outbound|443||wasm.example.com"
SHA256_PLACEHOLDER = "WASM_SHA256"
#: The mock upstreams as the manifests name their clusters (in-mesh Services, port 8080).
MOCK_CLUSTERS = {
    "mock-a": "outbound|8080||mock-a.llm-router.svc.cluster.local",
    "mock-b": "outbound|8080||mock-b.llm-router.svc.cluster.local",
}


def manifest_files() -> list[str]:
    return sorted(glob.glob(os.path.join(ISTIO_DIR, "*.yaml")))


def load(path: str) -> list[dict]:
    """Every YAML document of ``path`` (empty ones left out)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def envoy_filter(path: str) -> dict:
    filters = [d for d in load(path) if d.get("kind") == "EnvoyFilter"]
    assert len(filters) == 1, "%s: %d EnvoyFilters" % (path, len(filters))
    return filters[0]


def patches(path: str, apply_to: str) -> list[dict]:
    """The configPatches of the file's EnvoyFilter that apply to ``apply_to``, in order."""
    return [p for p in envoy_filter(path)["spec"]["configPatches"] if p["applyTo"] == apply_to]


def patch_value(path: str, apply_to: str, name: Optional[str] = None) -> dict:
    """The value of the one ``apply_to`` patch (named ``name``), deep-copied."""
    found = [p for p in patches(path, apply_to) if name is None or p["patch"]["value"].get("name") == name]
    assert len(found) == 1, "%s: %d %s patches named %r" % (path, len(found), apply_to, name)
    return copy.deepcopy(found[0]["patch"]["value"])


def extension_config(path: str = GATEWAY_YAML) -> dict:
    """The EXTENSION_CONFIG patch's value: {name, typed_config: the Wasm filter}."""
    return patch_value(path, "EXTENSION_CONFIG")


def wasm_config(path: str = GATEWAY_YAML) -> dict:
    """The wasm filter's ``config`` (PluginConfig) that the manifest delivers by ECDS."""
    return extension_config(path)["typed_config"]["config"]


def plugin_config(path: str = GATEWAY_YAML) -> dict:
    """The router's plugin configuration in the manifest, parsed."""
    return json.loads(wasm_config(path)["configuration"]["value"])


def attempt_filter(cluster: dict) -> dict:
    """The attempt filter (``llm_router_attempt``) among ``cluster``'s upstream filters."""
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    for f in opts["http_filters"]:
        if f["name"] == "llm_router_attempt":
            return f
    raise AssertionError("no llm_router_attempt filter on %s" % cluster.get("name"))


def attempt_config(path: str = GATEWAY_YAML) -> dict:
    """The attempt filter's ``config`` on the manifest's llm_failover cluster."""
    return attempt_filter(patch_value(path, "CLUSTER", "llm_failover"))["typed_config"]["config"]


def for_loopback(wasm_cfg: dict, uri: str, cluster: str, sha256: str) -> dict:
    """``wasm_cfg`` (a PluginConfig from the manifest) with its code fetched from ``uri`` by
    ``cluster`` and checked against ``sha256``; nothing else changed."""
    cfg = copy.deepcopy(wasm_cfg)
    remote = cfg["vm_config"]["code"]["remote"]
    assert remote["http_uri"]["uri"] == WASM_URL_PLACEHOLDER, remote
    assert remote["http_uri"]["cluster"] == WASM_CLUSTER_PLACEHOLDER, remote
    remote["http_uri"]["uri"] = uri
    remote["http_uri"]["cluster"] = cluster
    remote["sha256"] = sha256
    return cfg


def istio_cluster_names(plugin: dict) -> dict[str, str]:
    """upstream name -> cluster, from a plugin configuration."""
    return {name: up["cluster"] for name, up in plugin["upstreams"].items()}


def bundled_as_istio(bundled: dict) -> Any:
    """The bundled plugin configuration with each upstream's cluster named as Istio names it
    (what the manifests must carry)."""
    out = copy.deepcopy(bundled)
    hosts = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
    for name, up in out["upstreams"].items():
        if name in MOCK_CLUSTERS:
            up["cluster"] = MOCK_CLUSTERS[name]
        else:
            up["cluster"] = "outbound|443||%s" % hosts[name]
    return out
