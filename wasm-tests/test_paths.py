"""Every spelling of a routed path is routed, or refused, exactly as its canonical path.

The filter canonicalises the path itself (percent-decoding, dot segments, repeated slashes,
a trailing slash, ``;`` parameters, the case of the endpoint names) and sends the canonical
path upstream; what it cannot read safely (an encoded slash, a backslash, ``..`` above the
root) it refuses with a 400 when it would otherwise be a routed endpoint. Two Envoys: one
with the bundled configuration (Envoy's own normalisation on as well) and one with Envoy's
normalisation off, so that the filter's own layer is what decides. Requests are raw
HTTP/1.1, so the path bytes are exactly the table's. With ``clients``, a client allowed
only ``fast`` gets a 403 for ``smart`` on every spelling, and the upstream gets nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import pytest

from harness import EnvoyRouter, _hcm, build_config, raw_http

MOCK_KEY = "test-mock-key"
CLIENT_KEY = "sk-paths-" + secrets.token_hex(12)
NORMALISATION = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")

CHAT = "/v1/chat/completions"
# (spelling, canonical path it must be routed as; None: refused by the filter with a 400).
TABLE = [
    ("/v1/chat/completions", CHAT),
    ("//v1/chat/completions", CHAT),
    ("/v1//chat/completions", CHAT),
    ("/v1/chat//completions", CHAT),
    ("/v1/./chat/completions", CHAT),
    ("/./v1/chat/completions", CHAT),
    ("/v1/chat/../chat/completions", CHAT),
    ("/v1/x/y/../../chat/completions", CHAT),
    ("/v1/chat/completions/", CHAT),
    ("/v1/chat/completions;x=1", CHAT),
    ("/v1;a=b/chat/completions", CHAT),
    ("/V1/chat/completions", CHAT),
    ("/v1/CHAT/Completions", CHAT),
    ("/%761/chat/completions", CHAT),
    ("/v1/%63hat/completions", CHAT),
    ("/v1/chat/%2e/completions", CHAT),
    ("/v1/chat/%2E%2E/chat/completions", CHAT),
    ("/v1/chat/completions?x=1&y=%2F", CHAT + "?x=1&y=%2F"),
    ("/./v1/responses", "/v1/responses"),
    ("/v1//messages", "/v1/messages"),
    ("/V1/Embeddings/", "/v1/embeddings"),
    ("/v1/./completions", "/v1/completions"),
    ("/v1/chat%2Fcompletions", None),
    ("/v1%2Fchat%2Fcompletions", None),
    ("/v1/chat%2fcompletions", None),
    ("/v1/chat%5Ccompletions", None),
    ("/../v1/chat/completions", None),
    ("/v1/chat/completions%00", None),
    ("/v1/chat/completions%3Fx=1", None),
]
# Paths that are not endpoints in any reading: passed through untouched.
NOT_OURS = ["/v1/chat/completionsX", "/v2/chat/completions", "/v1/files"]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RawPathEnvoy(EnvoyRouter):
    """The bundled configuration with Envoy's own path normalisation taken out."""

    def config_doc(self) -> dict:
        doc = build_config(self.plugin_config, self.cluster_ports, self.extra_env_keys,
                           access_log_path=self.access_log_path)
        hcm = _hcm(doc)
        for key in NORMALISATION:
            assert key in hcm, "the bundled envoy.yaml turns on %s" % key
            del hcm[key]
        return doc


def keyed_config() -> dict:
    from harness import bundled_plugin_config

    config = bundled_plugin_config()
    config["clients"] = {"keys": [{"name": "fast-only", "key_sha256": sha(CLIENT_KEY), "models": ["fast"]}]}
    return config


@pytest.fixture(scope="module")
def routers(_mock_a, _mock_b):
    env = {"MOCK_API_KEY": MOCK_KEY}
    rs = {
        "bundled": EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, env=env, name="paths"),
        "raw": RawPathEnvoy(mock_a=_mock_a, mock_b=_mock_b, env=env, name="paths-raw"),
        "raw-keyed": RawPathEnvoy(mock_a=_mock_a, mock_b=_mock_b, env=env, name="paths-keyed",
                                  plugin_config=keyed_config()),
    }
    try:
        for r in rs.values():
            r.start()
        yield rs
    finally:
        for r in rs.values():
            r.stop()


def post(r: EnvoyRouter, path: str, model: str, key: str = "client-secret"):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "input": "hi", "max_tokens": 5}).encode()
    head = ("POST %s HTTP/1.1\r\nHost: llm.test\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (path, key, len(body))).encode()
    # One write: a reply at the headers must not race the body into a reset.
    return raw_http(r.port, head + body)


def get(r: EnvoyRouter, path: str, key: str = "client-secret"):
    head = ("GET %s HTTP/1.1\r\nHost: llm.test\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
            % (path, key)).encode()
    return raw_http(r.port, head)


def assert_routed(resp, mock, canonical: str, prefix: str, model: str, where: str):
    assert resp.status_code == 200, (where, resp.status_code, resp.content[:300])
    assert resp.header("x-llm-router-upstream"), (where, resp.header_list)
    assert len(mock.requests) == 1, (where, [q.path for q in mock.requests])
    got = mock.requests[0]
    assert got.path == prefix + canonical[len("/v1"):], (where, got.path)
    assert got.json()["model"] == model, where
    auth = got.header("authorization") or got.header("x-api-key") or ""
    assert "client-secret" not in auth and CLIENT_KEY not in auth, (where, auth)


def assert_invalid_path(resp, mocks, where: str):
    assert resp.status_code == 400, (where, resp.status_code, resp.content[:300])
    err = resp.json()["error"]
    assert err["code"] == "invalid_path" and err["type"] == "invalid_request_error", (where, err)
    assert set(err) == {"message", "type", "param", "code"}
    assert not any(m.requests for m in mocks), where


@pytest.mark.parametrize("spelling,canonical", TABLE)
def test_filter_alone_routes_or_refuses_each_spelling_as_its_canonical_path(
        routers, mock_a, mock_b, spelling, canonical):
    r = routers["raw"]
    for model, mock, other, prefix, served in (("fast", mock_a, mock_b, "/v1", "mock-small"),
                                              ("smart", mock_b, mock_a, "/openai/v1", "mock-large")):
        mock.clear()
        other.clear()
        resp = post(r, spelling, model)
        where = "%s %s" % (spelling, model)
        if canonical is None:
            assert_invalid_path(resp, (mock_a, mock_b), where)
        else:
            assert_routed(resp, mock, canonical, prefix, served, where)
            assert not other.requests, where


@pytest.mark.parametrize("spelling,canonical", TABLE)
def test_bundled_envoy_never_passes_a_spelling_through_unrouted(routers, mock_a, mock_b, spelling, canonical):
    # Envoy normalises first (escaped slashes unescaped): a spelling is routed as its
    # canonical path, or refused (by Envoy or the filter); never passed to the catch-all.
    resp = post(routers["bundled"], spelling, "smart")
    if resp.status_code == 200:
        assert_routed(resp, mock_b, canonical or CHAT, "/openai/v1", "mock-large", spelling)
        assert not mock_a.requests, spelling
    else:
        assert resp.status_code == 400, (spelling, resp.status_code, resp.content[:200])
        assert not mock_a.requests and not mock_b.requests, spelling


@pytest.mark.parametrize("spelling,canonical", TABLE)
def test_with_keys_every_spelling_carries_the_clients_policy(routers, mock_a, mock_b, spelling, canonical):
    r = routers["raw-keyed"]
    resp = post(r, spelling, "smart", key=CLIENT_KEY)
    if canonical is None:
        assert_invalid_path(resp, (mock_a, mock_b), spelling)
        return
    assert resp.status_code == 403, (spelling, resp.status_code, resp.content[:300])
    if canonical.endswith("/messages"):
        # Anthropic's shape for /v1/messages clients (README, Responses and errors).
        assert resp.json()["error"]["type"] == "permission_error"
    else:
        assert resp.json()["error"]["code"] == "model_not_allowed"
    assert not mock_a.requests and not mock_b.requests, spelling
    # The allowed model is routed, canonical, without the client's key.
    resp = post(r, spelling, "fast", key=CLIENT_KEY)
    assert_routed(resp, mock_a, canonical, "/v1", "mock-small", spelling)
    # No key at all: 401 on every spelling.
    assert post(r, spelling, "fast", key="").status_code == 401


@pytest.mark.parametrize("path", NOT_OURS)
def test_paths_that_are_not_endpoints_pass_through_untouched(routers, mock_a, mock_b, path):
    resp = post(routers["raw"], path, "smart")
    assert resp.status_code == 200, resp.content[:200]
    assert [q.path for q in mock_a.requests] == [path]
    assert mock_a.requests[0].json()["model"] == "smart"


@pytest.mark.parametrize("spelling", ["/v1/models", "//v1/models", "/V1/Models/", "/v1/./models;x",
                                      "/v1/models/fast", "/v1//models/fast/"])
def test_models_spellings_are_answered_by_the_router(routers, mock_a, mock_b, spelling):
    for name in ("raw", "bundled"):
        resp = get(routers[name], spelling)
        assert resp.status_code == 200, (name, spelling, resp.status_code, resp.content[:200])
        doc = resp.json()
        assert doc.get("object") in ("list", "model"), doc
        if spelling.rstrip("/").endswith("fast"):
            assert doc["id"] == "fast"
    assert not mock_a.requests and not mock_b.requests
    resp = get(routers["raw"], "/v1/models%2Ffast")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_path"
