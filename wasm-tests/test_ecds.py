"""The filter delivered the way Istio delivers it, in the real Envoy.

envoy/istio/gateway.yaml installs the router with an EnvoyFilter: an EXTENSION_CONFIG patch
holds the wasm filter's configuration (sent to Envoy by extension config discovery, ECDS), an
HTTP_FILTER patch puts a filter that names it (``config_discovery``) before the router, and
CLUSTER, LISTENER and HTTP_ROUTE patches add the failover cluster, the failover hop and the
routes that read the cluster from the filter's header. The Envoy here is built from those
patches, read from the manifest, with only this changed for loopback:

* ECDS comes from a file (``path_config_source`` in a watched directory, replaced by an
  atomic rename) instead of Istio's ADS;
* the .wasm is fetched over HTTP from a server on 127.0.0.1 (``http_uri`` and its cluster
  replaced) and checked against its real ``sha256`` (the manifest holds a placeholder);
* the upstream clusters keep the manifest's Istio names (``outbound|8080||mock-a...``),
  pointed at the mock providers, so cluster_header routing by those names is exercised.

(On Istio the istio-agent downloads the .wasm of an ECDS resource itself, checks its sha256
and hands Envoy a local file; the failover cluster's copy is fetched by Envoy as here.)
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import threading
import time
import urllib.parse

import httpx
import pytest

import harness
import istio_manifests as im
from harness import WASM, EnvoyRouter, chat, router_headers

# Istio 1.28 and 1.29 run Envoy 1.36 and 1.37: the way Istio delivers the filter is checked on
# every supported Envoy (make test-compat), not only the pinned one.
pytestmark = pytest.mark.core

CHAT = "/v1/chat/completions"
MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
GW = im.GATEWAY_YAML
CLIENT_KEY = "ecds-client-key"
#: How long an ECDS update (a file rename, and a .wasm fetch) may take to be applied or refused.
UPDATE_TIMEOUT = 15.0


def wasm_sha256() -> str:
    with open(WASM, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class WasmStore:
    """A plain HTTP server on 127.0.0.1 serving target/.../llm_router.wasm at /llm_router.wasm,
    counting the fetches."""

    def __init__(self):
        self.fetches = 0
        store = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - stdlib signature
                if self.path != "/llm_router.wasm":
                    self.send_error(404)
                    return
                store.fetches += 1
                with open(WASM, "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/wasm")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = "http://127.0.0.1:%d/llm_router.wasm" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WasmStore":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _static_cluster(name: str, port: int) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": name}}
    harness._set_endpoint(cluster, port)
    return cluster


class EcdsRouter(EnvoyRouter):
    """Envoy with the gateway manifest's filter, routes, failover cluster and hop; the wasm
    filter's configuration in a watched ECDS file (``write_filter``)."""

    def __init__(self, store: WasmStore, clusters: dict, **kwargs):
        super().__init__(**kwargs)
        self.store = store
        self.istio_clusters = clusters  # Istio cluster name -> loopback port
        self.version = 0

    def filter_resource(self, plugin_config=None, sha256=None, nack_on_miss=True) -> dict:
        """The manifest's ECDS resource, for loopback, with another plugin configuration or
        sha256 if given (``nack_on_miss=False``: without the manifest's
        ``nack_on_code_cache_miss``)."""
        ext = im.extension_config(GW)
        if not nack_on_miss:
            assert ext["typed_config"]["config"]["vm_config"].pop("nack_on_code_cache_miss") is True
        ext["typed_config"]["config"] = im.for_loopback(
            ext["typed_config"]["config"], self.store.uri, "wasm_store", sha256 or wasm_sha256())
        if plugin_config is not None:
            value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
            ext["typed_config"]["config"]["configuration"]["value"] = value
        ext["@type"] = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
        return ext

    def write_filter(self, plugin_config=None, sha256=None, nack_on_miss=True) -> None:
        self.version += 1
        doc = {"version_info": str(self.version),
               "resources": [self.filter_resource(plugin_config, sha256, nack_on_miss)]}
        tmp = os.path.join(self.ecds_dir, ".ecds.yaml.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            harness.yaml.safe_dump(doc, f, sort_keys=False)
        os.rename(tmp, os.path.join(self.ecds_dir, "ecds.yaml"))  # atomic: Envoy sees the move

    def config_doc(self) -> dict:
        self.ecds_dir = os.path.join(self.workdir, "ecds")
        os.mkdir(self.ecds_dir)
        self.write_filter(self.plugin_config)
        http_filter = im.patch_value(GW, "HTTP_FILTER")
        discovery = http_filter["config_discovery"]
        assert discovery["config_source"].pop("ads") == {}, discovery
        discovery["config_source"]["path_config_source"] = {
            "path": os.path.join(self.ecds_dir, "ecds.yaml"), "watched_directory": {"path": self.ecds_dir}}
        discovery["config_source"]["resource_api_version"] = "V3"
        # The HTTP_ROUTE patches are INSERT_FIRST, applied in order: the last one ends first.
        routes = [p["patch"]["value"] for p in im.patches(GW, "HTTP_ROUTE")]
        assert all(p["patch"]["operation"] == "INSERT_FIRST" for p in im.patches(GW, "HTTP_ROUTE"))
        routes.reverse()
        vhost = {"name": "llm.example.com:80", "domains": ["*"],
                 "routes": routes + [{"match": {"prefix": "/"},
                                      "route": {"cluster": im.MOCK_CLUSTERS["mock-a"], "timeout": "300s"}}]}
        vhost.update(im.patch_value(GW, "VIRTUAL_HOST"))
        listener = {
            "name": "llm_ingress",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "llm_ingress",
                    "route_config": {"name": "http.8080", "virtual_hosts": [vhost]},
                    "http_filters": [http_filter, {
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
        }
        listener.update([p["patch"]["value"] for p in im.patches(GW, "LISTENER")
                         if p["patch"]["operation"] == "MERGE"][0])
        failover = im.patch_value(GW, "CLUSTER", "llm_failover")
        attempt = im.attempt_filter(failover)["typed_config"]
        attempt["config"] = im.for_loopback(attempt["config"], self.store.uri, "wasm_store", wasm_sha256())
        clusters = [_static_cluster("wasm_store", self.store.port), failover]
        clusters += [_static_cluster(name, port) for name, port in self.istio_clusters.items()]
        return {
            "node": {"id": "llm-router-ecds", "cluster": "llm-router-ecds"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
            "static_resources": {"listeners": [listener, im.patch_value(GW, "LISTENER", "llm_failover_hop")],
                                 "clusters": clusters},
        }

    def ecds_stat(self, name: str) -> int:
        return self.counters("extension_config_discovery.").get(
            "extension_config_discovery.http_filter.llm-router." + name, 0)

    def remote_load(self, name: str) -> int:
        """Envoy's wasm.remote_load_<name> counter: under ``wasm.`` on Envoy 1.40, under the
        scope of the first filter that fetched (cluster.llm_failover.wasm.) on 1.36."""
        status, body = self.admin_get("/stats?usedonly&filter=" + urllib.parse.quote(
            r"(^|\.)wasm\.remote_load_%s$" % name))
        assert status == 200, body
        return sum(int(line.rsplit(": ", 1)[1]) for line in body.splitlines() if line.strip())

    def wait_ecds(self, name: str, value: int) -> None:
        deadline = time.monotonic() + UPDATE_TIMEOUT
        while self.ecds_stat(name) < value:
            assert time.monotonic() < deadline, "ecds %s never reached %d\n%s" % (name, value, self.log_tail())
            time.sleep(0.05)


@pytest.fixture
def store():
    with WasmStore() as s:
        yield s


def router(store, mock_a, mock_b, plugin_config=None, **kwargs) -> EcdsRouter:
    """The Envoy to start (``with``): the manifest's clusters pointed at the mocks."""
    clusters = {im.MOCK_CLUSTERS["mock-a"]: mock_a.port, im.MOCK_CLUSTERS["mock-b"]: mock_b.port}
    kwargs.setdefault("env", {"MOCK_API_KEY": MOCK_KEY})
    return EcdsRouter(store, clusters, mock_a=None, plugin_config=plugin_config, name="ecds", **kwargs)


def route(r: EnvoyRouter, client=None, key=None):
    headers = {"authorization": "Bearer " + key} if key else {}
    return (client or httpx).post(r.url + CHAT, json=chat("hello", model="fast"), headers=headers, timeout=10)


def assert_routed(resp, model="mock-small") -> None:
    assert resp.status_code == 200, resp.text
    h = router_headers(resp)
    assert (h["x-llm-router-upstream"], h["x-llm-router-model"]) == ("mock-a", model), h


def with_fast_model(model: str) -> dict:
    config = im.plugin_config(GW)
    config["models"]["fast"]["targets"][0]["model"] = model
    return config


def test_the_manifest_filter_routes_by_ecds(store, mock_a, mock_b):
    """The manifest's filter, delivered by ECDS with its .wasm fetched by URL, routes to the
    cluster it names the Istio way; the failover cluster's copy of the code came first."""
    with router(store, mock_a, mock_b) as r:
        assert r.ecds_stat("update_success") == 1 and r.ecds_stat("update_rejected") == 0
        assert store.fetches == 1, "one fetch, for the failover cluster and the ECDS filter"
        assert (r.remote_load("fetch_successes"), r.remote_load("cache_hits")) == (1, 1)
        assert_routed(route(r))
        got = mock_a.wait_for_requests(1)[-1]
        assert got.json()["model"] == "mock-small"
        assert got.header("authorization") == "Bearer " + MOCK_KEY
        assert got.header("x-llm-router-cluster") is None
        assert r.counters("cluster.%s.upstream_rq_200" % im.MOCK_CLUSTERS["mock-a"]) == {
            "cluster.%s.upstream_rq_200" % im.MOCK_CLUSTERS["mock-a"]: 1}
        assert mock_b.requests == []


def test_a_wrong_sha256_is_refused_and_the_last_good_filter_serves(store, mock_a, mock_b):
    """With nack_on_code_cache_miss, a .wasm whose sha256 is not in Envoy's code cache refuses
    the update (fetched in the background, the bytes do not match: a failed fetch), and the
    filter in place keeps routing with its configuration."""
    with router(store, mock_a, mock_b) as r:
        assert_routed(route(r))
        r.write_filter(with_fast_model("never-applied"), sha256="0" * 64)
        r.wait_ecds("update_rejected", 1)
        deadline = time.monotonic() + UPDATE_TIMEOUT
        while r.remote_load("fetch_failures") < 1:
            assert time.monotonic() < deadline, r.log_tail()
            time.sleep(0.1)
        assert store.fetches == 2, "the background fetch of the refused update's code"
        assert r.ecds_stat("update_success") == 1
        for _ in range(4):
            assert_routed(route(r))
        assert {q.json()["model"] for q in mock_a.requests} == {"mock-small"}
        # Pushed again (another configuration, the same wrong sha256): refused again.
        r.write_filter(with_fast_model("never-applied-either"), sha256="0" * 64)
        r.wait_ecds("update_rejected", 2)
        assert r.ecds_stat("update_success") == 1
        assert_routed(route(r))
        assert {q.json()["model"] for q in mock_a.requests} == {"mock-small"}


def test_without_nack_on_code_cache_miss_a_wrong_sha256_leaves_requests_unrouted(store, mock_a, mock_b):
    """Why the manifest sets nack_on_code_cache_miss: without it Envoy accepts an update whose
    code is not cached, does not fetch it (the fetch waits on an init manager that has already
    run) and leaves the filter out of the chain, whatever the failure_policy: requests pass
    through unrouted to the route's default cluster."""
    with router(store, mock_a, mock_b) as r:
        assert_routed(route(r))
        r.write_filter(with_fast_model("never-applied"), sha256="0" * 64, nack_on_miss=False)
        r.wait_ecds("update_success", 2)
        mock_a.clear()
        resp = route(r)
        assert resp.status_code == 200, resp.text
        assert router_headers(resp) == {}, router_headers(resp)
        assert mock_a.wait_for_requests(1)[-1].json()["model"] == "fast", "passed through as sent"
        assert store.fetches == 1, "the update's code was never fetched"


def test_an_invalid_plugin_configuration_is_refused_and_the_last_good_filter_serves(store, mock_a, mock_b):
    with router(store, mock_a, mock_b) as r:
        assert_routed(route(r))
        bad = with_fast_model("never-applied")
        bad["models"]["fast"]["targets"].append({"upstream": "mock-z", "model": "x"})
        r.write_filter(bad)
        r.wait_ecds("update_rejected", 1)
        assert r.ecds_stat("update_success") == 1
        log = open(r.log_path, encoding="utf-8", errors="replace").read()
        assert "invalid plugin configuration: models.fast.targets[1].upstream: unknown upstream `mock-z`" in log, \
            r.log_tail()
        assert "Filesystem config update rejected: Unable to create Wasm plugin llm_router" in log, r.log_tail()
        for _ in range(4):
            assert_routed(route(r))
        assert {q.json()["model"] for q in mock_a.requests} == {"mock-small"}
        # Not JSON at all: refused the same way.
        r.write_filter("{not json")
        r.wait_ecds("update_rejected", 2)
        assert_routed(route(r))


def test_a_new_configuration_applies_without_restart_and_keeps_the_shared_counters(store, mock_a, mock_b):
    """A client's rpm is counted in shared data: two requests before the update and one after
    it use up its rpm of 3 (the fourth gets 429), while the update's new model is in force on
    the connection opened before it (no restart, no drained listener)."""
    config = im.plugin_config(GW)
    config["clients"] = {"keys": [{"name": "team-a", "key_sha256": hashlib.sha256(CLIENT_KEY.encode()).hexdigest(),
                                   "rpm": 3}]}
    with router(store, mock_a, mock_b, plugin_config=config) as r, httpx.Client() as client:
        pid = r.proc.pid
        for _ in range(2):
            assert_routed(route(r, client, CLIENT_KEY))
        cx = r.counters("http.llm_ingress.downstream_cx_total")
        updated = copy.deepcopy(config)
        updated["models"]["fast"]["targets"][0]["model"] = "mock-small-v2"
        r.write_filter(updated)
        r.wait_ecds("update_success", 2)
        assert r.ecds_stat("update_rejected") == 0
        assert_routed(route(r, client, CLIENT_KEY), model="mock-small-v2")
        assert mock_a.requests[-1].json()["model"] == "mock-small-v2"
        over = route(r, client, CLIENT_KEY)
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "rate_limit_exceeded", over.text
        assert r.counters("http.llm_ingress.downstream_cx_total") == cx, "the connection was not kept"
        assert r.proc.pid == pid and r.proc.poll() is None
        assert len(mock_a.requests) == 3


def test_failover_goes_through_the_manifest_s_cluster_and_hop(store, mock_a, mock_b):
    """The manifest's failover route, llm_failover cluster (attempt filter fetched by URL) and
    internal hop listener: mock-a answers 500, the same request is answered by mock-b."""
    config = im.plugin_config(GW)
    config["models"]["fast"]["targets"].append({"upstream": "mock-b", "model": "mock-large"})
    mock_a.set_response(status=500, body={"error": "boom"})
    with router(store, mock_a, mock_b, plugin_config=config) as r:
        resp = route(r)
        assert resp.status_code == 200, resp.text
        h = router_headers(resp)
        assert (h["x-llm-router-upstream"], h["x-llm-router-model"]) == ("mock-b", "mock-large"), h
        assert [q.json()["model"] for q in mock_a.requests] == ["mock-small"]
        assert [q.json()["model"] for q in mock_b.requests] == ["mock-large"]
        assert r.counters("cluster.llm_failover.upstream_rq_retry").get("cluster.llm_failover.upstream_rq_retry") == 1
