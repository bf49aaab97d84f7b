"""The Istio manifests in envoy/istio/, checked without a cluster (no kubectl).

Every document parses and is a known kind at its apiVersion; each EnvoyFilter inserts the raw
wasm filter (by ECDS) before envoy.filters.http.router with allow_on_headers_stop_iteration,
fetches the .wasm by URL with a sha256, carries the bundled plugin configuration with the
clusters named the Istio way, and has the same routes, failover cluster and hop as
envoy/envoy.yaml. test_ecds.py runs the gateway's patches in Envoy.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import pytest

import harness
import istio_manifests as im

KINDS = {
    "EnvoyFilter": "networking.istio.io/v1alpha3",
    "Gateway": "networking.istio.io/v1",
    "VirtualService": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
}
FILTER_FILES = {im.GATEWAY_YAML: "GATEWAY", im.SIDECAR_YAML: "SIDECAR_OUTBOUND"}
ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"


def bundled_route(doc: dict, header_match: dict) -> dict:
    routes = harness._hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    return next(r for r in routes if r["match"].get("headers") == [header_match])


def test_the_manifests_are_there():
    names = {os.path.basename(p) for p in im.manifest_files()}
    assert names == {"gateway.yaml", "sidecar.yaml", "providers.yaml"}, names


@pytest.mark.parametrize("path", im.manifest_files(), ids=os.path.basename)
def test_every_document_parses_and_is_a_known_kind(path):
    docs = im.load(path)
    assert docs, path
    for d in docs:
        assert d.get("kind") in KINDS, d.get("kind")
        assert d["apiVersion"] == KINDS[d["kind"]], (d["kind"], d["apiVersion"])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), d["metadata"]
        assert isinstance(d["spec"], dict) and d["spec"], d


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_every_patch_is_for_one_context_and_a_known_operation(path):
    spec = im.envoy_filter(path)["spec"]
    assert spec["workloadSelector"]["labels"], "the EnvoyFilter selects its proxies"
    ops = {"EXTENSION_CONFIG": {"ADD"}, "HTTP_FILTER": {"INSERT_BEFORE"}, "HTTP_ROUTE": {"INSERT_FIRST"},
           "CLUSTER": {"ADD"}, "LISTENER": {"ADD", "MERGE"}, "VIRTUAL_HOST": {"MERGE"}}
    for p in spec["configPatches"]:
        assert p["match"]["context"] == FILTER_FILES[path], p["match"]
        assert p["patch"]["operation"] in ops[p["applyTo"]], p


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_the_raw_wasm_filter_goes_before_the_router_by_ecds(path):
    [patch] = im.patches(path, "HTTP_FILTER")
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    listener = patch["match"]["listener"]["filterChain"]["filter"]
    assert (listener["name"], listener["subFilter"]["name"]) == (HCM, ROUTER)
    value = patch["patch"]["value"]
    ext = im.extension_config(path)
    assert value["name"] == ext["name"], "the filter names the EXTENSION_CONFIG"
    assert value["config_discovery"]["config_source"] == {"ads": {}, "initial_fetch_timeout": "0s"}
    assert value["config_discovery"]["type_urls"] == [im.WASM_TYPE]
    assert "default_config" not in value["config_discovery"], "no unrouted default"
    assert ext["typed_config"]["@type"] == im.WASM_TYPE, "the raw Wasm filter, not a WasmPlugin"


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_the_filter_config_matches_the_bundled_one(path):
    bundled = harness.wasm_filter_config(harness.load_bundled())
    cfg = im.wasm_config(path)
    assert cfg["allow_on_headers_stop_iteration"] is True
    for key in ("name", "root_id", "failure_policy", "allow_on_headers_stop_iteration"):
        assert cfg[key] == bundled[key], key
    vm = copy.deepcopy(cfg["vm_config"])
    assert vm.pop("nack_on_code_cache_miss") is True
    code = vm.pop("code")
    want = copy.deepcopy(bundled["vm_config"])
    del want["code"]
    assert vm == want, "vm_id, runtime, environment_variables as in envoy/envoy.yaml"
    remote = code["remote"]
    assert remote["http_uri"] == {"uri": im.WASM_URL_PLACEHOLDER, "cluster": im.WASM_CLUSTER_PLACEHOLDER,
                                  "timeout": "30s"}
    assert remote["sha256"] == im.SHA256_PLACEHOLDER
    assert cfg["configuration"]["@type"] == bundled["configuration"]["@type"]


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_the_plugin_configuration_is_the_bundled_one_with_istio_cluster_names(path):
    plugin = im.plugin_config(path)
    assert plugin == im.bundled_as_istio(harness.bundled_plugin_config())
    assert im.istio_cluster_names(plugin) == {
        "mock-a": "outbound|8080||mock-a.llm-router.svc.cluster.local",
        "mock-b": "outbound|8080||mock-b.llm-router.svc.cluster.local",
        "openai": "outbound|443||api.openai.com",
        "anthropic": "outbound|443||api.anthropic.com",
    }
    keys = {up["auth"]["key_env"] for up in plugin["upstreams"].values()}
    assert keys <= set(im.wasm_config(path)["vm_config"]["environment_variables"]["host_env_keys"])


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_the_routes_read_the_filter_s_cluster_header(path):
    doc = harness.load_bundled()
    routes = {p["patch"]["value"]["name"]: p["patch"]["value"] for p in im.patches(path, "HTTP_ROUTE")}
    routed = routes.pop("llm-router-routed")
    want = bundled_route(doc, {"name": "x-llm-router-cluster", "present_match": True})
    assert {k: v for k, v in routed.items() if k != "name"} == want
    failover = routes.pop("llm-router-failover")
    cluster = im.plugin_config(path)["failover"]["cluster"]
    want = bundled_route(doc, {"name": "x-llm-router-cluster", "string_match": {"exact": cluster}})
    assert {k: v for k, v in failover.items() if k != "name"} == want
    assert routes == {}
    # INSERT_FIRST in order: the failover route (the more specific match) ends up first.
    names = [p["patch"]["value"]["name"] for p in im.patches(path, "HTTP_ROUTE")]
    assert names == ["llm-router-routed", "llm-router-failover"]
    vhosts = {p["match"]["routeConfiguration"]["vhost"]["name"] for p in im.patches(path, "HTTP_ROUTE")}
    [merge] = im.patches(path, "VIRTUAL_HOST")
    assert {merge["match"]["routeConfiguration"]["vhost"]["name"]} == vhosts
    assert merge["patch"]["value"] == {"include_request_attempt_count": True}


@pytest.mark.parametrize("path", sorted(FILTER_FILES), ids=os.path.basename)
def test_the_failover_cluster_and_hop_are_the_bundled_ones(path):
    doc = harness.load_bundled()
    cluster = im.patch_value(path, "CLUSTER", "llm_failover")
    attempt = im.attempt_config(path)
    ext = im.wasm_config(path)
    vm = copy.deepcopy(ext["vm_config"])
    del vm["nack_on_code_cache_miss"]  # fetched while Envoy starts: nothing to refuse
    assert attempt["vm_config"] == vm
    assert attempt["configuration"] == ext["configuration"]
    bundled_attempt = harness.attempt_filter_config(doc)
    bundled_attempt["vm_config"] = vm
    bundled_attempt["configuration"] = ext["configuration"]
    assert cluster == harness._cluster(doc, "llm_failover"), "the bundled cluster, with the manifest's code"
    hop = im.patch_value(path, "LISTENER", "llm_failover_hop")
    want = next(ls for ls in doc["static_resources"]["listeners"] if ls["name"] == "llm_failover_hop")
    assert hop == want
    [merge] = [p for p in im.patches(path, "LISTENER") if p["patch"]["operation"] == "MERGE"]
    assert merge["patch"]["value"] == {"per_connection_buffer_limit_bytes":
                                       harness._listener(doc)["per_connection_buffer_limit_bytes"]}


def test_the_sidecar_patches_are_the_gateway_s():
    """sidecar.yaml differs from gateway.yaml in context and matches only."""
    def values(path):
        return [(p["applyTo"], p["patch"]) for p in im.envoy_filter(path)["spec"]["configPatches"]]

    assert values(im.SIDECAR_YAML) == values(im.GATEWAY_YAML)


def test_the_providers_have_tls_origination_with_sni():
    docs = im.load(im.PROVIDERS_YAML)
    entries = {d["spec"]["hosts"][0]: d for d in docs if d["kind"] == "ServiceEntry"}
    rules = {d["spec"]["host"]: d for d in docs if d["kind"] == "DestinationRule"}
    wasm_host = im.WASM_CLUSTER_PLACEHOLDER.rsplit("|", 1)[1]
    assert set(entries) == set(rules) == {"api.openai.com", "api.anthropic.com", wasm_host}
    clusters = set(im.istio_cluster_names(im.plugin_config()).values()) | {im.WASM_CLUSTER_PLACEHOLDER}
    for host, se in entries.items():
        assert se["spec"]["location"] == "MESH_EXTERNAL" and se["spec"]["resolution"] == "DNS"
        assert [p["number"] for p in se["spec"]["ports"]] == [443]
        assert "outbound|443||%s" % host in clusters
        [tls] = rules[host]["spec"]["trafficPolicy"]["portLevelSettings"]
        assert tls == {"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": host}}
        assert se["spec"]["exportTo"] == rules[host]["spec"]["exportTo"] == ["."]
        assert "namespace" not in se["metadata"], "applied in the router's proxy's namespace"


def test_make_istio_fills_in_the_url_and_the_sha256(tmp_path):
    """`make istio WASM_URL=...` writes target/istio/ with the URL, its host and the sha256 of
    the built .wasm in place of the placeholders."""
    url = "https://files.example.org/llm/llm_router.wasm"
    p = subprocess.run(["make", "-s", "istio", "WASM_URL=" + url], cwd=harness.REPO, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    sha = subprocess.run(["sha256sum", harness.WASM], capture_output=True, text=True, check=True).stdout.split()[0]
    out = os.path.join(harness.REPO, "target", "istio", "gateway.yaml")
    cfg = im.wasm_config(out)
    remote = cfg["vm_config"]["code"]["remote"]
    assert remote["http_uri"]["uri"] == url
    assert remote["http_uri"]["cluster"] == "outbound|443||files.example.org"
    assert remote["sha256"] == sha and re.fullmatch(r"[0-9a-f]{64}", sha)
    assert im.attempt_config(out)["vm_config"]["code"] == cfg["vm_config"]["code"]
    assert json.loads(cfg["configuration"]["value"]) == im.plugin_config()
    hosts = {d["spec"]["hosts"][0] for d in im.load(os.path.join(harness.REPO, "target", "istio", "providers.yaml"))
             if d["kind"] == "ServiceEntry"}
    assert "files.example.org" in hosts
