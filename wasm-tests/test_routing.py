"""End-to-end routing tests: the real Envoy with the llm-router filter in front of mock providers.

Two Envoys per module (both module-scoped, both in front of the same two mock providers):

* ``bundled`` (conftest): ``envoy/envoy.yaml`` exactly as shipped;
* ``custom`` (below): one plugin configuration holding many rules, aliases and upstreams, each
  routing to a model id that names it, so that a test can tell from what the mock received
  which rule, alias or strategy decided.

Every test checks what the upstream mock received (method, path, model, credentials, exact body
bytes, ``content-length``) and what the client got (status and ``x-llm-router-*`` headers).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness import (
    EnvoyRouter,
    assert_openai_error,
    chat,
    chunked,
    jdump,
    raw_http,
    replace_once,
    router_headers,
    split_pieces,
)

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
OTHER_KEY_ENV = "LLM_ROUTER_TEST_OTHER_KEY"
OTHER_KEY = "other-key-123"
ABSENT_KEY_ENV = "LLM_ROUTER_TEST_ABSENT_KEY"

CHAT = "/v1/chat/completions"
PROMPT = "Say hello please"  # 16 chars: 8 estimated tokens, no task, no tag, low complexity
CODE_PROMPT = "Fix this:\n```python\ndef f(:\n```"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
IMAGE_CONTENT = [{"type": "text", "text": "What is in this picture?"},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]


# ---------------------------------------------------------------------------
# The custom plugin configuration
# ---------------------------------------------------------------------------


def T(model: str, upstream: str = "a-bearer", **extra) -> dict:
    """A target."""
    return dict(upstream=upstream, model=model, **extra)


def R(name: str, match: dict, model: str = "", upstream: str = "a-bearer") -> dict:
    """A rule routing to one target whose model id is ``m-<rule name>`` by default."""
    return {"name": name, "match": match, "targets": [T(model or "m-" + name, upstream)]}


CUSTOM = {
    "upstreams": {
        "a-bearer": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        "b-xkey": {"cluster": "mock-b", "path_prefix": "/openai/v1",
                   "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        "c-apikey": {"cluster": "mock-a", "host": "llm.example.test:8443",
                     "path_prefix": "/openai/deployments/dep1",
                     "auth": {"type": "api-key", "key_env": OTHER_KEY_ENV},
                     "headers": {"anthropic-version": "2023-06-01", "X-Provider-Extra": "yes"}},
        "d-nokey": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": ABSENT_KEY_ENV}},
        "e-noauth": {"cluster": "mock-b"},
    },
    "models": {
        "prio": {"targets": [T("m-prio-first", "d-nokey"), T("m-prio-second", "b-xkey"),
                             T("m-prio-third", "a-bearer")]},
        "only-missing": {"targets": [T("m-missing", "d-nokey")]},
        "weighted": {"strategy": "weighted",
                     "targets": [T("m-heavy", "a-bearer", weight=3), T("m-light", "b-xkey", weight=1)]},
        "rr": {"strategy": "round_robin",
               "targets": [T("m-rr-0", "a-bearer"), T("m-rr-1", "b-xkey"), T("m-rr-2", "e-noauth")]},
        "rr-par": {"strategy": "round_robin",
                   "targets": [T("m-rp-0", "a-bearer"), T("m-rp-1", "b-xkey"), T("m-rp-2", "e-noauth")]},
        "cheap": {"strategy": "cheapest",
                  "targets": [T("m-pricey", "a-bearer", price={"input": 5, "output": 15}),
                              T("m-cheap", "b-xkey", price={"input": 0.1, "output": 0.2}),
                              T("m-mid", "e-noauth", price={"input": 1, "output": 2})]},
        "cheap-tradeoff": {"strategy": "cheapest",
                           "targets": [T("m-cheap-in", "a-bearer", price={"input": 1, "output": 100}),
                                       T("m-cheap-out", "b-xkey", price={"input": 10, "output": 1})]},
        "pref": {"targets": [T("m-pref-a", "a-bearer", price={"input": 1, "output": 1}),
                             T("m-pref-b", "b-xkey", price={"input": 0.5, "output": 0.5}),
                             T("m-pref-e", "e-noauth", price={"input": 2, "output": 2})]},
        "apikey": {"targets": [T("m-apikey", "c-apikey")]},
        "noauth": {"targets": [T("m-noauth", "e-noauth")]},
        "xkey": {"targets": [T("m-xkey", "b-xkey")]},
        "bearer": {"targets": [T("m-bearer", "a-bearer")]},
        "same-model": {"targets": [T("same-model", "a-bearer")]},
    },
    "classifier": {
        "tags": [
            {"name": "finance", "keywords": ["invoice", "ledger"]},
            {"name": "ticket", "regex": ["TICKET-[0-9]{4}"]},
            {"name": "legal", "keywords": ["contract"]},
        ]
    },
    "rules": [
        R("model-exact", {"model": ["exact-model"]}),
        R("model-glob", {"model": ["gpt-4o*"]}),
        R("auto-completions", {"model": ["auto"], "path": ["completions"]}),
        R("hdr-exact", {"headers": [{"name": "X-Team", "exact": "research"}]}),
        R("hdr-regex", {"headers": [{"name": "x-tenant", "regex": "^acme-[0-9]+$"}]}),
        R("hdr-present", {"headers": [{"name": "x-beta", "present": True},
                                      {"name": "x-no-beta", "present": False}]}),
        R("tag-kw", {"tags": ["finance"]}),
        R("tag-re", {"tags": ["ticket"]}),
        R("images", {"images": True}),
        R("tools", {"tools": True}),
        R("stream", {"stream": True}),
        R("nostream-responses", {"stream": False, "path": ["responses"]}),
        R("embeddings", {"path": ["embeddings"], "task": ["embedding"]}),
        R("messages-path", {"path": ["messages"]}),
        R("task-coding", {"task": ["coding"]}),
        R("complexity-high", {"complexity": ["high", "xhigh"]}),
        R("min-tokens", {"min_prompt_tokens": 3000}),
        R("max-tokens", {"max_prompt_tokens": 6}),
    ],
    "default": {"targets": [T("m-default", "a-bearer")]},
    "unknown_model": "passthrough",
    "passthrough_upstream": "b-xkey",
}


@pytest.fixture(scope="module")
def custom(_mock_a, _mock_b):
    """Envoy (2 workers) running CUSTOM in front of the module's mocks."""
    env = {"MOCK_API_KEY": MOCK_KEY, OTHER_KEY_ENV: OTHER_KEY, ABSENT_KEY_ENV: None}
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CUSTOM, env=env,
                     extra_env_keys=[OTHER_KEY_ENV, ABSENT_KEY_ENV], concurrency=2,
                     name="routing-custom") as r:
        yield r


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def send(router, path, body=None, headers=None, method="POST") -> httpx.Response:
    """One request over a fresh connection; dict bodies are sent as compact JSON."""
    data = body if body is None or isinstance(body, bytes) else jdump(body)
    h = {"content-type": "application/json"} if data is not None else {}
    h.update(headers or {})
    return httpx.request(method, router.url + path, content=data, headers=h, timeout=15)


def only_request(target, *others):
    """The single request ``target`` recorded; the ``others`` recorded none."""
    reqs = target.requests
    assert len(reqs) == 1, "%s got %d requests: %r" % (target.name, len(reqs), reqs)
    for o in others:
        assert o.requests == [], "%s should have received nothing: %r" % (o.name, o.requests)
    return reqs[0]


def check_upstream(rec, path, model=None, body=None):
    """What an upstream received: POST, path, model, exact body, a content-length that fits it."""
    assert rec.method == "POST", rec
    assert rec.path == path, rec.path
    if body is not None:
        assert rec.body == body, "upstream body differs:\n got %r\nwant %r" % (rec.body, body)
    if model is not None:
        assert rec.json()["model"] == model, rec.body
    assert rec.header("content-length") == str(len(rec.body)), (rec.header("content-length"), len(rec.body))
    assert rec.header("x-llm-router-cluster") is None, rec.headers


def check_route(resp, upstream, model, rule, task=None, complexity=None, tags=None):
    """The client got 200 and the diagnostic headers say this (tags None: no tags header)."""
    assert resp.status_code == 200, (resp.status_code, resp.text)
    h = router_headers(resp)
    assert h.get("x-llm-router-upstream") == upstream, h
    assert h.get("x-llm-router-model") == model, h
    assert h.get("x-llm-router-rule") == rule, h
    if task is not None:
        assert h.get("x-llm-router-task") == task, h
    if complexity is not None:
        assert h.get("x-llm-router-complexity") == complexity, h
    assert h.get("x-llm-router-tags") == tags, h
    return h


def expected_body(body: dict, model) -> bytes:
    """Compact JSON of ``body`` with the router-only fields removed and the model set."""
    out = {k: v for k, v in body.items() if k not in ("allowed_models", "provider")}
    if "model" in out:
        out["model"] = model
    else:
        out = {"model": model, **out}
    return jdump(out)


def route_custom(custom, mock_a, mock_b, body, path=CHAT, headers=None):
    """Sends ``body`` (after emptying the mocks); returns (response, mock that received it, request)."""
    mock_a.clear()
    mock_b.clear()
    resp = send(custom, path, body, headers)
    assert resp.status_code == 200, resp.text
    reqs = mock_a.requests + mock_b.requests
    assert len(reqs) == 1, reqs
    got = mock_a if mock_a.requests else mock_b
    return resp, got, reqs[0]


def routed_model(custom, mock_a, mock_b, body, path=CHAT, headers=None) -> str:
    """The model id the upstream received (and the header agrees); clears the mocks."""
    resp, _, rec = route_custom(custom, mock_a, mock_b, body, path, headers)
    model = rec.json()["model"]
    assert router_headers(resp)["x-llm-router-model"] == model
    mock_a.clear()
    mock_b.clear()
    return model


def rule_of(custom, mock_a, mock_b, body, path=CHAT, headers=None) -> str:
    """The x-llm-router-rule of a routed request, checked against the model the upstream got."""
    resp, _, rec = route_custom(custom, mock_a, mock_b, body, path, headers)
    rule = router_headers(resp)["x-llm-router-rule"]
    model = rec.json()["model"]
    if rule.startswith("rule:"):
        assert model == "m-" + rule[len("rule:"):], (rule, model)
    elif rule == "default":
        assert model == "m-default", model
    mock_a.clear()
    mock_b.clear()
    return rule


def words(n_chars: int) -> str:
    """Plain prose-like filler of exactly ``n_chars`` characters (no task words, no tags)."""
    return ("lorem ipsum dolor sit amet " * (n_chars // 27 + 1))[:n_chars]


# ---------------------------------------------------------------------------
# 1. The bundled configuration as shipped
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_bundled_auto_plain_prompt_goes_to_default_on_mock_a(bundled, mock_a, mock_b):
    """model auto + plain prompt: default rule, mock-a, model mock-small, bearer key."""
    body = chat("Say hello")
    resp = send(bundled, CHAT, body, {"authorization": "Bearer client-key"})
    check_route(resp, "mock-a", "mock-small", "default", task="general", complexity="low")
    rec = only_request(mock_a, mock_b)
    check_upstream(rec, CHAT, "mock-small", replace_once(jdump(body), b'"auto"', b'"mock-small"'))
    assert rec.header_all("authorization") == ["Bearer " + MOCK_KEY]
    assert rec.header("x-api-key") is None
    assert resp.json()["choices"][0]["message"]["content"] == \
        "mock-a received model=mock-small path=/v1/chat/completions"


@pytest.mark.core
def test_bundled_coding_prompt_goes_to_code_and_math_on_mock_b(bundled, mock_a, mock_b):
    """A code fence: rule code-and-math, mock-b under /openai/v1 with x-api-key, mock-large."""
    body = chat(CODE_PROMPT)
    resp = send(bundled, CHAT, body, {"authorization": "Bearer client-key"})
    check_route(resp, "mock-b", "mock-large", "rule:code-and-math", task="coding")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "mock-large",
                   replace_once(jdump(body), b'"auto"', b'"mock-large"'))
    assert rec.header_all("x-api-key") == [MOCK_KEY]
    assert rec.header("authorization") is None


@pytest.mark.core
def test_bundled_legal_tag_goes_to_legal_rule(bundled, mock_a, mock_b):
    """The word "contract" tags the request legal: rule legal, mock-b, tags header."""
    body = chat("Please review this contract for me.")
    resp = send(bundled, CHAT, body)
    check_route(resp, "mock-b", "mock-large", "rule:legal", task="general", complexity="low", tags="legal")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large")


@pytest.mark.core
def test_bundled_long_prompt_goes_to_hard_rule(bundled, mock_a, mock_b):
    """A ~11k-token plain prompt is high complexity by its size alone: rule hard (listed
    first), mock-b. (What task filler words are is anyone's guess: not checked.)"""
    body = chat(words(44000))
    resp = send(bundled, CHAT, body)
    h = check_route(resp, "mock-b", "mock-large", "rule:hard")
    assert h["x-llm-router-complexity"] in ("high", "xhigh"), h
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large",
                   replace_once(jdump(body), b'"auto"', b'"mock-large"'))


@pytest.mark.core
def test_bundled_reasoning_effort_high_goes_to_hard_rule(bundled, mock_a, mock_b):
    """reasoning_effort high on a short prompt makes it high complexity: rule hard."""
    resp = send(bundled, CHAT, chat("Say hello", reasoning_effort="high"))
    check_route(resp, "mock-b", "mock-large", "rule:hard", complexity="high")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large")


@pytest.mark.core
def test_bundled_explicit_alias_fast(bundled, mock_a, mock_b):
    """model "fast" goes to its alias (mock-a, mock-small), even with a coding prompt."""
    for prompt in ("Say hello", CODE_PROMPT):
        mock_a.clear()
        body = chat(prompt, model="fast")
        resp = send(bundled, CHAT, body)
        check_route(resp, "mock-a", "mock-small", "model:fast")
        rec = only_request(mock_a, mock_b)
        check_upstream(rec, CHAT, "mock-small", replace_once(jdump(body), b'"fast"', b'"mock-small"'))
        assert rec.header("authorization") == "Bearer " + MOCK_KEY


@pytest.mark.core
def test_bundled_explicit_alias_smart(bundled, mock_a, mock_b):
    """model "smart" goes to its alias: mock-b, mock-large, /openai/v1, x-api-key."""
    body = chat("Say hello", model="smart")
    resp = send(bundled, CHAT, body)
    check_route(resp, "mock-b", "mock-large", "model:smart", task="general", complexity="low")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "mock-large",
                   replace_once(jdump(body), b'"smart"', b'"mock-large"'))
    assert rec.header("x-api-key") == MOCK_KEY


@pytest.mark.core
def test_bundled_omitted_model_behaves_like_auto(bundled, mock_a, mock_b):
    """No model: default rule, and the model is inserted as the body's first member."""
    body = chat("Say hello", model=None)
    assert "model" not in body
    resp = send(bundled, CHAT, body)
    check_route(resp, "mock-a", "mock-small", "default")
    check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small",
                   b'{"model":"mock-small",' + jdump(body)[1:])
    mock_a.clear()
    # ... and an omitted model still goes through the rules like auto.
    body = chat(CODE_PROMPT, model=None)
    resp = send(bundled, CHAT, body)
    check_route(resp, "mock-b", "mock-large", "rule:code-and-math")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large",
                   b'{"model":"mock-large",' + jdump(body)[1:])


def test_bundled_null_model_behaves_like_auto(bundled, mock_a, mock_b):
    """"model": null is routed like auto; only the null is replaced."""
    body = chat("Say hello", model=None)
    raw = b'{"model":null,' + jdump(body)[1:]
    resp = send(bundled, CHAT, raw)
    check_route(resp, "mock-a", "mock-small", "default")
    check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small",
                   replace_once(raw, b"null", b'"mock-small"'))


@pytest.mark.core
def test_bundled_alias_whose_key_is_unset_gets_503(bundled, mock_a, mock_b):
    """gpt-4o-mini's upstream (openai) has no OPENAI_API_KEY: 503 naming the variable."""
    resp = send(bundled, CHAT, chat("Say hello", model="gpt-4o-mini"))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert "OPENAI_API_KEY" in err["message"], err
    assert mock_a.requests == [] and mock_b.requests == []


# ---------------------------------------------------------------------------
# 2. Endpoints
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_completions_endpoint_is_routed(bundled, mock_a, mock_b):
    """POST /v1/completions is read and routed like chat."""
    body = {"model": "smart", "prompt": "Say hello", "max_tokens": 5}
    resp = send(bundled, "/v1/completions", body)
    check_route(resp, "mock-b", "mock-large", "model:smart")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/completions", "mock-large",
                   replace_once(jdump(body), b'"smart"', b'"mock-large"'))
    assert resp.json()["object"] == "text_completion"


@pytest.mark.core
def test_responses_endpoint_is_routed(bundled, mock_a, mock_b):
    """POST /v1/responses with auto is classified and goes to the default."""
    body = {"model": "auto", "input": "Say hello", "instructions": "Be brief."}
    resp = send(bundled, "/v1/responses", body)
    check_route(resp, "mock-a", "mock-small", "default", task="general")
    check_upstream(only_request(mock_a, mock_b), "/v1/responses", "mock-small",
                   replace_once(jdump(body), b'"auto"', b'"mock-small"'))
    assert resp.json()["object"] == "response"


@pytest.mark.core
def test_embeddings_endpoint_is_routed_with_task_embedding(bundled, mock_a, mock_b):
    """POST /v1/embeddings is classified as task embedding and routed."""
    body = {"model": "auto", "input": ["first text", "second text"]}
    resp = send(bundled, "/v1/embeddings", body)
    check_route(resp, "mock-a", "mock-small", "default", task="embedding")
    check_upstream(only_request(mock_a, mock_b), "/v1/embeddings", "mock-small",
                   replace_once(jdump(body), b'"auto"', b'"mock-small"'))
    assert len(resp.json()["data"]) == 2


@pytest.mark.core
def test_anthropic_messages_routed_with_format_unchanged(bundled, mock_a, mock_b):
    """Anthropic /v1/messages: routed, only the model changes; the client's anthropic-version stays."""
    raw = (b'{"model": "smart", "max_tokens": 256, "system": "You are terse.",\n'
           b' "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],'
           b' "stop_sequences": ["\\n\\nHuman:"]}')
    resp = send(bundled, "/v1/messages", raw, {"anthropic-version": "2023-06-01", "x-api-key": "client-key"})
    check_route(resp, "mock-b", "mock-large", "model:smart")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/messages", "mock-large", replace_once(raw, b'"smart"', b'"mock-large"'))
    assert rec.header("anthropic-version") == "2023-06-01"
    assert rec.header_all("x-api-key") == [MOCK_KEY]
    assert resp.json()["type"] == "message"
    mock_b.clear()
    # auto on /v1/messages goes to the default like chat.
    resp = send(bundled, "/v1/messages", replace_once(raw, b'"smart"', b'"auto"'))
    check_route(resp, "mock-a", "mock-small", "default")
    check_upstream(only_request(mock_a, mock_b), "/v1/messages", "mock-small",
                   replace_once(raw, b'"smart"', b'"mock-small"'))


def test_query_string_is_kept_when_path_prefix_changes(bundled, mock_a, mock_b):
    """The path prefix swap keeps the query string; a trailing slash is still routed, and the
    upstream gets the canonical path (no trailing slash)."""
    resp = send(bundled, CHAT + "?api-version=2024-06-01&x=1", chat("Hi", model="smart"))
    check_route(resp, "mock-b", "mock-large", "model:smart")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions?api-version=2024-06-01&x=1",
                   "mock-large")
    mock_b.clear()
    resp = send(bundled, CHAT + "/", chat("Hi", model="smart"))
    check_route(resp, "mock-b", "mock-large", "model:smart")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large")


@pytest.mark.core
def test_other_gets_pass_through_untouched(bundled, mock_a, mock_b):
    """GET /v1/files reaches mock-a (default Envoy route) with the client's auth and no router headers."""
    resp = send(bundled, "/v1/files", None, {"authorization": "Bearer client-key", "x-api-key": "cx"},
                method="GET")
    assert resp.status_code == 200, resp.text
    assert router_headers(resp) == {}
    rec = only_request(mock_a, mock_b)
    assert (rec.method, rec.path) == ("GET", "/v1/files")
    assert rec.header("authorization") == "Bearer client-key"
    assert rec.header("x-api-key") == "cx"


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/files"),
    ("POST", "/v2/chat/completions"),
    ("POST", "/v1/chat/completionsX"),
    ("PUT", "/v1/chat/completions"),
])
def test_other_paths_and_methods_pass_through_untouched(bundled, mock_a, mock_b, method, path):
    """Other paths/methods: body, path and client credentials reach mock-a unchanged."""
    raw = b'{ "model" : "smart", "provider": {"only": ["mock-b"]}, "allowed_models": ["x"] }'
    resp = send(bundled, path, raw, {"authorization": "Bearer client-key", "api-key": "ck"}, method=method)
    assert resp.status_code == 200, resp.text
    assert router_headers(resp) == {}
    rec = only_request(mock_a, mock_b)
    assert (rec.method, rec.path, rec.body) == (method, path, raw)
    assert rec.header("authorization") == "Bearer client-key"
    assert rec.header("api-key") == "ck"
    assert rec.header("content-length") == str(len(raw))


# ---------------------------------------------------------------------------
# 3. Rule conditions (custom configuration)
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_rule_model_exact(custom, mock_a, mock_b):
    """match.model with an exact name routes that explicit model."""
    resp, got, rec = route_custom(custom, mock_a, mock_b, chat(PROMPT, model="exact-model"))
    check_route(resp, "a-bearer", "m-model-exact", "rule:model-exact")
    assert got is mock_a
    check_upstream(rec, CHAT, "m-model-exact")
    # A near miss is not routed by the rule (it passes through as an unknown model).
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT, model="exact-model-2")) == "passthrough"


def test_rule_model_glob(custom, mock_a, mock_b):
    """match.model "gpt-4o*" is a case-sensitive glob over the requested model."""
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06"):
        assert routed_model(custom, mock_a, mock_b, chat(PROMPT, model=model)) == "m-model-glob", model
    for model in ("gpt-4", "GPT-4o-mini", "xgpt-4o"):
        assert rule_of(custom, mock_a, mock_b, chat(PROMPT, model=model)) == "passthrough", model


def test_rule_model_auto_matches_auto_null_and_omitted(custom, mock_a, mock_b):
    """match.model ["auto"] holds for "auto", null and an omitted model, not for an alias."""
    prompt = {"prompt": PROMPT}
    for body in ({"model": "auto", **prompt}, {"model": None, **prompt}, prompt):
        assert rule_of(custom, mock_a, mock_b, body, path="/v1/completions") == "rule:auto-completions", body
    assert rule_of(custom, mock_a, mock_b, {"model": "bearer", **prompt}, path="/v1/completions") == "model:bearer"


def test_rules_without_model_condition_ignore_explicit_models(custom, mock_a, mock_b):
    """A rule without match.model applies only to auto: an alias with a matching header is not captured."""
    hdr = {"x-team": "research"}
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT), headers=hdr) == "rule:hdr-exact"
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT, model="bearer"), headers=hdr) == "model:bearer"
    assert rule_of(custom, mock_a, mock_b, chat(CODE_PROMPT, model="bearer")) == "model:bearer"


def test_rule_task(custom, mock_a, mock_b):
    """match.task coding catches a code prompt; a plain prompt goes to the default."""
    resp, got, rec = route_custom(custom, mock_a, mock_b, chat(CODE_PROMPT))
    check_route(resp, "a-bearer", "m-task-coding", "rule:task-coding", task="coding")
    check_upstream(rec, CHAT, "m-task-coding")
    mock_a.clear()
    resp, got, rec = route_custom(custom, mock_a, mock_b, chat(PROMPT))
    check_route(resp, "a-bearer", "m-default", "default", task="general", complexity="low")


def test_rule_complexity(custom, mock_a, mock_b):
    """match.complexity [high, xhigh] catches high effort and long prompts, not medium ones."""
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(PROMPT, reasoning_effort="high"))
    check_route(resp, "a-bearer", "m-complexity-high", "rule:complexity-high", complexity="high")
    mock_a.clear()
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(PROMPT, reasoning_effort="xhigh"))
    check_route(resp, "a-bearer", "m-complexity-high", "rule:complexity-high", complexity="xhigh")
    mock_a.clear()
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(words(44000)))
    h = check_route(resp, "a-bearer", "m-complexity-high", "rule:complexity-high")
    assert h["x-llm-router-complexity"] in ("high", "xhigh")
    mock_a.clear()
    # ~2500 tokens of filler words: what level they are is the model's guess; a low effort caps
    # it at medium (below 32k tokens), so the rule must not match.
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(words(10000), reasoning_effort="low"))
    h = check_route(resp, "a-bearer", "m-default", "default")
    assert h["x-llm-router-complexity"] in ("low", "medium"), h


def test_rule_tags_keyword_and_regex(custom, mock_a, mock_b):
    """match.tags: a keyword tag (whole word, any case) and a regex tag (case-sensitive)."""
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat("Please check this INVOICE today."))
    check_route(resp, "a-bearer", "m-tag-kw", "rule:tag-kw", tags="finance")
    mock_a.clear()
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat("What is the status of TICKET-1234 now?"))
    check_route(resp, "a-bearer", "m-tag-re", "rule:tag-re", tags="ticket")
    mock_a.clear()
    # Not whole words / wrong case for the regex: no tag, default.
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat("Check the invoices and ticket-1234 please."))
    check_route(resp, "a-bearer", "m-default", "default")


def test_rule_path(custom, mock_a, mock_b):
    """match.path selects endpoints: completions, responses, embeddings, messages; chat has none."""
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT)) == "default"
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "prompt": PROMPT},
                   path="/v1/completions") == "rule:auto-completions"
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "input": PROMPT},
                   path="/v1/responses") == "rule:nostream-responses"
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "input": "hello world"},
                   path="/v1/embeddings") == "rule:embeddings"
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "max_tokens": 64,
                                            "messages": [{"role": "user", "content": PROMPT}]},
                   path="/v1/messages") == "rule:messages-path"


def test_rule_request_headers_exact_regex_present(custom, mock_a, mock_b):
    """match.headers: exact (case-sensitive value), regex, present true / false."""
    body = chat(PROMPT)
    cases = [
        ({"X-Team": "research"}, "rule:hdr-exact"),
        ({"x-team": "Research"}, "default"),
        ({"x-tenant": "acme-42"}, "rule:hdr-regex"),
        ({"x-tenant": "acme-42x"}, "default"),
        ({"x-beta": "1"}, "rule:hdr-present"),
        ({"x-beta": "1", "x-no-beta": "1"}, "default"),
        ({}, "default"),
    ]
    for headers, rule in cases:
        assert rule_of(custom, mock_a, mock_b, body, headers=headers) == rule, headers


def test_rule_stream_true_and_false(custom, mock_a, mock_b):
    """match.stream true catches stream:true; stream:false (or absent) on responses hits its rule."""
    resp, _, rec = route_custom(custom, mock_a, mock_b, chat(PROMPT, stream=True))
    check_route(resp, "a-bearer", "m-stream", "rule:stream")
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in resp.text
    mock_a.clear()
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "input": PROMPT, "stream": True},
                   path="/v1/responses") == "rule:stream"
    assert rule_of(custom, mock_a, mock_b, {"model": "auto", "input": PROMPT, "stream": False},
                   path="/v1/responses") == "rule:nostream-responses"
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT, stream=False)) == "default"


def test_rule_tools(custom, mock_a, mock_b):
    """match.tools true: a non-empty tools array; an empty one does not count."""
    q = "What is the weather in Paris today?"
    assert rule_of(custom, mock_a, mock_b, chat(q, tools=TOOLS)) == "rule:tools"
    assert rule_of(custom, mock_a, mock_b, chat(q, tools=[])) == "default"
    assert rule_of(custom, mock_a, mock_b, chat(q)) == "default"


def test_rule_images(custom, mock_a, mock_b):
    """match.images true: an image_url part (task vision); text parts alone do not count."""
    resp, _, rec = route_custom(custom, mock_a, mock_b, chat(IMAGE_CONTENT))
    check_route(resp, "a-bearer", "m-images", "rule:images", task="vision")
    check_upstream(rec, CHAT, "m-images")
    mock_a.clear()
    assert rule_of(custom, mock_a, mock_b, chat(IMAGE_CONTENT[:1])) == "default"


def test_rule_prompt_token_bounds_inclusive(custom, mock_a, mock_b):
    """min/max_prompt_tokens are inclusive bounds on ceil(chars/4) + 4 per message."""
    # max_prompt_tokens 6: 8 chars -> 2 + 4 = 6 (holds), 9 chars -> 3 + 4 = 7 (does not).
    assert rule_of(custom, mock_a, mock_b, chat("abcd efg")) == "rule:max-tokens"
    assert rule_of(custom, mock_a, mock_b, chat("abcd efgh")) == "default"
    # min_prompt_tokens 3000: 11984 chars -> 2996 + 4 = 3000 (holds), 11980 -> 2999 (does not).
    # Filler words: a low effort keeps the complexity rule (listed first) out of it.
    low = {"reasoning_effort": "low"}
    assert rule_of(custom, mock_a, mock_b, chat(words(11984), **low)) == "rule:min-tokens"
    assert rule_of(custom, mock_a, mock_b, chat(words(11980), **low)) == "default"


def test_first_matching_rule_wins(custom, mock_a, mock_b):
    """With several rules matching, the one listed first decides."""
    # hdr-exact (4th) before tag-kw (7th) before tools (10th).
    assert rule_of(custom, mock_a, mock_b, chat("Pay this invoice", tools=TOOLS),
                   headers={"x-team": "research"}) == "rule:hdr-exact"
    assert rule_of(custom, mock_a, mock_b, chat("Pay this invoice", tools=TOOLS)) == "rule:tag-kw"
    assert rule_of(custom, mock_a, mock_b, chat("Pay this bill now", tools=TOOLS, stream=True)) == "rule:tools"
    # task-coding (15th) before complexity-high (16th): a high-effort coding prompt.
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(CODE_PROMPT, reasoning_effort="high"))
    check_route(resp, "a-bearer", "m-task-coding", "rule:task-coding", task="coding", complexity="high")
    mock_a.clear()
    # An explicit model named by a rule: the model rule, not the header rule that comes later.
    assert rule_of(custom, mock_a, mock_b, chat(PROMPT, model="exact-model"),
                   headers={"x-team": "research"}) == "rule:model-exact"


# ---------------------------------------------------------------------------
# 4. Strategies
# ---------------------------------------------------------------------------


def test_priority_skips_upstream_without_key(custom, mock_a, mock_b):
    """priority: the first target's key variable is unset, so the second target is used."""
    body = chat(PROMPT, model="prio")
    resp = send(custom, CHAT, body, {"authorization": "Bearer client"})
    check_route(resp, "b-xkey", "m-prio-second", "model:prio")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "m-prio-second",
                   replace_once(jdump(body), b'"prio"', b'"m-prio-second"'))
    assert rec.header("x-api-key") == MOCK_KEY and rec.header("authorization") is None


def test_only_target_without_key_gets_503_naming_variable(custom, mock_a, mock_b):
    """An alias whose only upstream lacks its key: 503 no_available_target naming the variable."""
    resp = send(custom, CHAT, chat(PROMPT, model="only-missing"))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert ABSENT_KEY_ENV in err["message"], err
    assert mock_a.requests == [] and mock_b.requests == []


def test_weighted_follows_weights(custom, mock_a, mock_b):
    """weighted 3:1 over 100 requests: both used, the heavy one 55..95 times."""
    n = 100
    body = chat(PROMPT, model="weighted")
    for _ in range(n):
        resp = send(custom, CHAT, body)
        assert resp.status_code == 200, resp.text
        assert router_headers(resp)["x-llm-router-model"] in ("m-heavy", "m-light")
    heavy, light = mock_a.requests, mock_b.requests
    assert len(heavy) + len(light) == n
    assert all(r.json()["model"] == "m-heavy" and r.path == CHAT for r in heavy)
    assert all(r.json()["model"] == "m-light" and r.path == "/openai/v1/chat/completions" for r in light)
    assert 55 <= len(heavy) <= 95, (len(heavy), len(light))
    assert len(light) >= 5, (len(heavy), len(light))


@pytest.mark.core
def test_round_robin_alternates_exactly(custom, mock_a, mock_b):
    """round_robin: consecutive requests (fresh connections, 2 workers) take the targets in turn."""
    seq = [routed_model(custom, mock_a, mock_b, chat(PROMPT, model="rr")) for _ in range(9)]
    idx = [int(m.rsplit("-", 1)[1]) for m in seq]
    for prev, cur in zip(idx, idx[1:]):
        assert cur == (prev + 1) % 3, seq


def test_round_robin_turns_shared_under_parallel_load(custom, mock_a, mock_b):
    """round_robin: 30 parallel requests over both workers give each of 3 targets exactly 10."""
    body = chat(PROMPT, model="rr-par")
    send(custom, CHAT, body)  # first turn (creates the shared counter)
    mock_a.clear()
    mock_b.clear()
    with ThreadPoolExecutor(max_workers=6) as ex:
        resps = list(ex.map(lambda _: send(custom, CHAT, body), range(30)))
    counts: dict = {}
    for r in resps:
        assert r.status_code == 200, r.text
        m = router_headers(r)["x-llm-router-model"]
        counts[m] = counts.get(m, 0) + 1
    assert counts == {"m-rp-0": 10, "m-rp-1": 10, "m-rp-2": 10}, counts
    got = sorted(r.json()["model"] for r in mock_a.requests + mock_b.requests)
    assert got == sorted(["m-rp-0"] * 10 + ["m-rp-1"] * 10 + ["m-rp-2"] * 10)


@pytest.mark.core
def test_cheapest_picks_lowest_price(custom, mock_a, mock_b):
    """cheapest: the cheapest target (listed second) is chosen, every time."""
    for _ in range(3):
        body = chat(PROMPT, model="cheap")
        resp = send(custom, CHAT, body)
        check_route(resp, "b-xkey", "m-cheap", "model:cheap")
        check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "m-cheap",
                       replace_once(jdump(body), b'"cheap"', b'"m-cheap"'))
        mock_b.clear()


def test_cheapest_weighs_prompt_and_output_tokens(custom, mock_a, mock_b):
    """cheapest: cost = input price x prompt estimate + output price x max_tokens (512 if absent)."""
    big = words(12000)  # ~3000 tokens
    # in: 1*p + 100*o, out: 10*p + 1*o
    assert routed_model(custom, mock_a, mock_b, chat(big, model="cheap-tradeoff", max_tokens=10)) == "m-cheap-in"
    assert routed_model(custom, mock_a, mock_b,
                        chat(big, model="cheap-tradeoff", max_completion_tokens=10)) == "m-cheap-in"
    assert routed_model(custom, mock_a, mock_b, chat(big, model="cheap-tradeoff")) == "m-cheap-out"
    assert routed_model(custom, mock_a, mock_b, chat(PROMPT, model="cheap-tradeoff", max_tokens=10)) == "m-cheap-out"


# ---------------------------------------------------------------------------
# 5. Unknown models
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_unknown_model_rejected_with_404(bundled, mock_a, mock_b):
    """Bundled (unknown_model reject): an unknown explicit model gets an OpenAI-shaped 404."""
    resp = send(bundled, CHAT, chat("Say hello", model="no-such-model"))
    err = assert_openai_error(resp, 404, "model_not_found", param="model")
    assert "no-such-model" in err["message"]
    assert mock_a.requests == [] and mock_b.requests == []


def test_unknown_model_passthrough_keeps_model_and_body(custom, mock_a, mock_b):
    """unknown_model passthrough: forwarded to passthrough_upstream, body byte-identical."""
    raw = b'{"model" : "gpt-4",  "messages":[{"role":"user","content":"Say hello please"}], "n":1.0e0}'
    resp = send(custom, CHAT, raw, {"authorization": "Bearer client"})
    check_route(resp, "b-xkey", "gpt-4", "passthrough")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "gpt-4", raw)
    assert rec.header("x-api-key") == MOCK_KEY and rec.header("authorization") is None


def test_passthrough_model_with_control_character_not_echoed(custom, mock_a, mock_b):
    """A passthrough model holding a control character reaches the upstream but not a header."""
    raw = b'{"model":"odd\\u0007model","messages":[{"role":"user","content":"Say hello please"}]}'
    resp = send(custom, CHAT, raw)
    assert resp.status_code == 200, resp.text
    h = router_headers(resp)
    assert h["x-llm-router-rule"] == "passthrough" and h["x-llm-router-upstream"] == "b-xkey", h
    assert "x-llm-router-model" not in h, h
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "odd\u0007model", raw)


def test_invalid_model_type_rejected(bundled, mock_a, mock_b):
    """A non-string model is a 400 invalid_type on param model; an empty one invalid_value."""
    assert_openai_error(send(bundled, CHAT, chat("Hi", model=5)), 400, "invalid_type", param="model")
    assert_openai_error(send(bundled, CHAT, chat("Hi", model="")), 400, "invalid_value", param="model")
    assert mock_a.requests == [] and mock_b.requests == []


# ---------------------------------------------------------------------------
# 6. Router-only body fields: allowed_models and provider
# ---------------------------------------------------------------------------


def pref_route(custom, mock_a, mock_b, **fields):
    """Sends alias "pref" with router-only fields; checks their removal; returns the model used."""
    body = {"model": "pref", **fields, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0.5}
    resp, got, rec = route_custom(custom, mock_a, mock_b, body)
    model = rec.json()["model"]
    upstream, mock = {"m-pref-a": ("a-bearer", mock_a), "m-pref-b": ("b-xkey", mock_b),
                      "m-pref-e": ("e-noauth", mock_b)}[model]
    check_route(resp, upstream, model, "model:pref")
    assert got is mock, (model, got)
    assert rec.body == expected_body(body, model), rec.body
    assert rec.header("content-length") == str(len(rec.body))
    mock_a.clear()
    mock_b.clear()
    return model


def test_allowed_models_narrows_candidates(custom, mock_a, mock_b):
    """allowed_models globs match the model id or upstream/model; the field is removed."""
    assert pref_route(custom, mock_a, mock_b) == "m-pref-a"
    assert pref_route(custom, mock_a, mock_b, allowed_models=["m-pref-e"]) == "m-pref-e"
    assert pref_route(custom, mock_a, mock_b, allowed_models=["*-b"]) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, allowed_models=["e-noauth/*"]) == "m-pref-e"
    assert pref_route(custom, mock_a, mock_b, allowed_models=["nothing", "m-pref-?"]) == "m-pref-a"
    assert pref_route(custom, mock_a, mock_b, allowed_models=None) == "m-pref-a"


def test_allowed_models_excluding_everything_gets_503(custom, mock_a, mock_b):
    """allowed_models that match no target: 503 no_available_target saying why."""
    resp = send(custom, CHAT, chat(PROMPT, model="pref", allowed_models=["gpt-*"]))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert "allowed_models" in err["message"], err
    assert mock_a.requests == [] and mock_b.requests == []


def test_provider_only_and_ignore(custom, mock_a, mock_b):
    """provider.only keeps (case-insensitively) only those upstreams; provider.ignore drops them."""
    assert pref_route(custom, mock_a, mock_b, provider={"only": ["B-XKEY"]}) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, provider={"only": ["e-noauth", "b-xkey"]}) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, provider={"ignore": ["a-bearer"]}) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, provider={"ignore": ["a-bearer", "b-xkey"]}) == "m-pref-e"
    # Unknown OpenRouter members are accepted and ignored.
    assert pref_route(custom, mock_a, mock_b,
                      provider={"only": ["e-noauth"], "data_collection": "deny", "quantizations": ["fp8"]}) == "m-pref-e"
    resp = send(custom, CHAT, chat(PROMPT, model="pref", provider={"only": ["nobody"]}))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert "provider.only" in err["message"], err


def test_provider_order(custom, mock_a, mock_b):
    """provider.order puts the named upstreams first, in that order."""
    assert pref_route(custom, mock_a, mock_b, provider={"order": ["e-noauth", "b-xkey"]}) == "m-pref-e"
    assert pref_route(custom, mock_a, mock_b, provider={"order": ["B-XKEY"]}) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, provider={"order": ["nobody"]}) == "m-pref-a"
    assert pref_route(custom, mock_a, mock_b,
                      provider={"order": ["e-noauth", "b-xkey"], "ignore": ["e-noauth"]}) == "m-pref-b"


def test_provider_sort(custom, mock_a, mock_b):
    """provider.sort price picks the cheapest target; latency picks the lowest latency average
    (the shared health counters); throughput picks the fewest in flight, ties keep the order."""
    assert pref_route(custom, mock_a, mock_b, provider={"sort": "price"}) == "m-pref-b"
    assert pref_route(custom, mock_a, mock_b, provider={"sort": "price", "ignore": ["b-xkey"]}) == "m-pref-a"
    # Make the first-priority target the slow one: "latency" must then leave it.
    mock_a.latency_ms = 60
    try:
        for _ in range(8):
            assert pref_route(custom, mock_a, mock_b, provider={"order": ["a-bearer"]}) == "m-pref-a"
    finally:
        mock_a.latency_ms = 0
    for order in (["b-xkey"], ["e-noauth"]):
        for _ in range(3):
            assert pref_route(custom, mock_a, mock_b, provider={"order": order}) != "m-pref-a"
    assert pref_route(custom, mock_a, mock_b, provider={"sort": "latency"}) in ("m-pref-b", "m-pref-e")
    assert pref_route(custom, mock_a, mock_b, provider={"sort": "throughput"}) == "m-pref-a"


def test_provider_allow_fallbacks_false(custom, mock_a, mock_b):
    """provider.allow_fallbacks false still routes to the first choice, and is removed."""
    assert pref_route(custom, mock_a, mock_b, provider={"allow_fallbacks": False}) == "m-pref-a"
    assert pref_route(custom, mock_a, mock_b,
                      provider={"allow_fallbacks": False, "order": ["e-noauth"]}) == "m-pref-e"
    assert pref_route(custom, mock_a, mock_b, provider={"allow_fallbacks": True, "sort": "price"},
                      allowed_models=["m-pref-a", "m-pref-e"]) == "m-pref-a"


def test_router_fields_of_wrong_type_rejected(custom, mock_a, mock_b):
    """Wrongly typed allowed_models / provider members get 400 naming the parameter."""
    cases = [
        ({"allowed_models": "m-pref-a"}, "invalid_type", "allowed_models"),
        ({"allowed_models": [1]}, "invalid_type", "allowed_models"),
        ({"provider": "b-xkey"}, "invalid_type", "provider"),
        ({"provider": {"only": "b-xkey"}}, "invalid_type", "provider.only"),
        ({"provider": {"ignore": [""]}}, "invalid_type", "provider.ignore"),
        ({"provider": {"order": [{}]}}, "invalid_type", "provider.order"),
        ({"provider": {"sort": "fastest"}}, "invalid_value", "provider.sort"),
        ({"provider": {"sort": 1}}, "invalid_type", "provider.sort"),
        ({"provider": {"allow_fallbacks": "no"}}, "invalid_type", "provider.allow_fallbacks"),
    ]
    for fields, code, param in cases:
        resp = send(custom, CHAT, chat(PROMPT, model="pref", **fields))
        assert_openai_error(resp, 400, code, param=param)
    assert mock_a.requests == [] and mock_b.requests == []


def test_router_fields_removed_byte_exact_in_any_position(custom, bundled, mock_a, mock_b):
    """allowed_models / provider are cut out wherever they are; every other byte is kept."""
    msgs = b'"messages":[{"role":"user","content":"Say hello please","provider":{"keep":1}}]'
    prov = b'"provider":{"order":["e-noauth"],"allowed_models":["x"]}'
    allowed = b'"allowed_models":["m-pref-*"]'
    cases = [
        (b'{' + allowed + b',"model":"pref",' + msgs + b',' + prov + b'}',
         b'{"model":"m-pref-e",' + msgs + b'}'),
        (b'{"model":"pref",' + prov + b',' + msgs + b',"top_p":0.9}',
         b'{"model":"m-pref-e",' + msgs + b',"top_p":0.9}'),
        (b'{' + prov + b',' + allowed + b',' + msgs + b',"model":"pref"}',
         b'{' + msgs + b',"model":"m-pref-e"}'),
        (b'{"model":"pref",' + msgs + b',' + allowed + b',' + prov + b'}',
         b'{"model":"m-pref-e",' + msgs + b'}'),
    ]
    for raw, want in cases:
        resp = send(custom, CHAT, raw)
        check_route(resp, "e-noauth", "m-pref-e", "model:pref")
        check_upstream(only_request(mock_b, mock_a), CHAT, "m-pref-e", want)
        mock_b.clear()
    # Removal alone, the model already being the upstream's id: only the fields go.
    for raw in (b'{"model":"same-model","provider":{"sort":"price"}}',
                b'{"allowed_models":["*"], "model":"same-model"}',
                b'{"allowed_models":["*"],"model":"same-model","provider":{}}'):
        resp = send(custom, CHAT, raw)
        check_route(resp, "a-bearer", "same-model", "model:same-model")
        check_upstream(only_request(mock_a, mock_b), CHAT, "same-model", b'{"model":"same-model"}')
        mock_a.clear()
    # Nothing left but the inserted model.
    resp = send(custom, CHAT, b'{"provider":{"only":["a-bearer"]}}')
    check_route(resp, "a-bearer", "m-max-tokens", "rule:max-tokens")
    check_upstream(only_request(mock_a, mock_b), CHAT, "m-max-tokens", b'{"model":"m-max-tokens"}')
    mock_a.clear()
    # Removal alone (model unchanged, an auto default on the bundled config): only the fields go.
    raw = b'{"model":"fast",' + msgs + b',"allowed_models":["mock-*"]}'
    resp = send(bundled, CHAT, raw)
    check_route(resp, "mock-a", "mock-small", "model:fast")
    check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small",
                   b'{"model":"mock-small",' + msgs + b'}')


# ---------------------------------------------------------------------------
# 7. Byte-exact body rewrite
# ---------------------------------------------------------------------------

ODD_BODY = (
    b'{ "temperature" :1.0e2 ,\n\t"seed":12345678901234567890,"big": 123456789012345678901234567890,'
    b'  "neg":-0.000 , "exp": 2E-3,\r\n'
    b'"messages" : [ {"role":"user", "content":"caf\\u00e9 \\"quoted\\" \\/ \xc3\xa9t\xc3\xa9 \\ud83d\\ude00",'
    b' "model":"nested-in-message"} ],\n'
    b'  "model"   :\t"fast"  ,\n'
    b'  "metadata": {"model": "smart", "list": [1, {"model": "auto"}], "s": "\\"model\\":\\"x\\""} ,'
    b'"tail":[] , "empty":{}\n}\n'
)


def test_body_rewrite_is_byte_exact_with_odd_json(bundled, mock_a, mock_b):
    """Odd whitespace, numbers, escapes and nested "model" keys: only the top-level value changes."""
    json.loads(ODD_BODY)  # the test body is valid JSON
    resp = send(bundled, CHAT, ODD_BODY)
    check_route(resp, "mock-a", "mock-small", "model:fast")
    rec = only_request(mock_a, mock_b)
    check_upstream(rec, CHAT, "mock-small", replace_once(ODD_BODY, b'"fast"', b'"mock-small"'))
    assert int(rec.header("content-length")) == len(ODD_BODY) + len("mock-small") - len("fast")


def test_body_rewrite_shrinking_model(custom, mock_a, mock_b):
    """A model id shorter than the alias: exact bytes and a smaller content-length."""
    raw = b'{"messages":[{"role":"user","content":"Say hello please"}], "max_tokens":10,"model":"cheap-tradeoff"  }'
    resp = send(custom, CHAT, raw)
    check_route(resp, "b-xkey", "m-cheap-out", "model:cheap-tradeoff")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "m-cheap-out",
                   replace_once(raw, b'"cheap-tradeoff"', b'"m-cheap-out"'))
    assert len(rec.body) == len(raw) - 3


def test_body_rewrite_escaped_model_key(bundled, mock_a, mock_b):
    """A top-level key written with an escape ("mo\\u0064el") is the model member: its value changes."""
    raw = b'{"mo\\u0064el":"smart","messages":[{"role":"user","content":"Hi"}]}'
    resp = send(bundled, CHAT, raw)
    check_route(resp, "mock-b", "mock-large", "model:smart")
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "mock-large",
                   replace_once(raw, b'"smart"', b'"mock-large"'))


def test_body_model_inserted_first_when_omitted(bundled, mock_a, mock_b):
    """Without a model member the chosen model is inserted right after "{"; the rest is kept."""
    raw = b' {\n  "messages" : [ {"role":"user","content":"Say hello"} ] ,"n" : 1 }  '
    resp = send(bundled, CHAT, raw)
    check_route(resp, "mock-a", "mock-small", "default")
    check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small",
                   replace_once(raw, b'{\n', b'{"model":"mock-small",\n'))


def test_body_model_inserted_into_empty_object(bundled, mock_a, mock_b):
    """An empty object body gets just the model member."""
    for raw in (b'{}', b'{ }'):
        resp = send(bundled, CHAT, raw)
        check_route(resp, "mock-a", "mock-small", "default")
        check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small",
                       raw[:1] + b'"model":"mock-small"' + raw[1:])
        mock_a.clear()


def test_unchanged_model_leaves_body_identical(custom, mock_a, mock_b):
    """When the chosen model id equals the requested one, the body is forwarded byte for byte."""
    raw = b'{ "model":"same-model" ,"messages":[{"role":"user","content":"Say hello please"}],"x":1.50}'
    resp = send(custom, CHAT, raw)
    check_route(resp, "a-bearer", "same-model", "model:same-model")
    check_upstream(only_request(mock_a, mock_b), CHAT, "same-model", raw)


@pytest.mark.core
def test_chunked_request_body_rewritten_byte_exact(bundled, mock_a, mock_b):
    """A chunked client body, sent in pieces, is rewritten exactly like a sized one."""
    top = b'"model"   :\t"fast"'
    raw = replace_once(ODD_BODY, top, b'"model"   :\t"smart"')
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    resp = raw_http(bundled.port, head, chunked(split_pieces(raw, 5)), delay=0.02)
    assert resp.status_code == 200, resp.content
    assert resp.header("x-llm-router-model") == "mock-large"
    assert resp.header("x-llm-router-rule") == "model:smart"
    rec = only_request(mock_b, mock_a)
    assert rec.path == "/openai/v1/chat/completions"
    assert rec.body == replace_once(ODD_BODY, top, b'"model"   :\t"mock-large"')
    cl = rec.header("content-length")
    assert cl is None or int(cl) == len(rec.body), cl


# ---------------------------------------------------------------------------
# 8. Credentials, authority, extra headers, path prefix, cluster header
# ---------------------------------------------------------------------------

CLIENT_CREDS = {"authorization": "Bearer client-secret", "x-api-key": "client-x", "api-key": "client-api"}


def test_bearer_auth_replaces_client_credentials(custom, mock_a, mock_b):
    """bearer upstream: only "Authorization: Bearer <key>", no client x-api-key / api-key."""
    resp = send(custom, CHAT, chat(PROMPT, model="bearer"), CLIENT_CREDS)
    check_route(resp, "a-bearer", "m-bearer", "model:bearer")
    rec = only_request(mock_a, mock_b)
    check_upstream(rec, CHAT, "m-bearer")
    assert rec.header_all("authorization") == ["Bearer " + MOCK_KEY]
    assert rec.header_all("x-api-key") == [] and rec.header_all("api-key") == []


def test_x_api_key_auth_replaces_client_credentials(custom, mock_a, mock_b):
    """x-api-key upstream: only "x-api-key: <key>", no authorization / api-key; path prefixed."""
    resp = send(custom, CHAT, chat(PROMPT, model="xkey"), CLIENT_CREDS)
    check_route(resp, "b-xkey", "m-xkey", "model:xkey")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, "/openai/v1/chat/completions", "m-xkey")
    assert rec.header_all("x-api-key") == [MOCK_KEY]
    assert rec.header_all("authorization") == [] and rec.header_all("api-key") == []


def test_api_key_auth_host_extra_headers_and_path_prefix(custom, mock_a, mock_b):
    """api-key upstream with host, headers and path_prefix: all applied, client values replaced."""
    hdrs = dict(CLIENT_CREDS, **{"anthropic-version": "1999-01-01", "x-client-own": "kept"})
    resp = send(custom, CHAT + "?api-version=2024-06-01", chat(PROMPT, model="apikey"), hdrs)
    check_route(resp, "c-apikey", "m-apikey", "model:apikey")
    rec = only_request(mock_a, mock_b)
    check_upstream(rec, "/openai/deployments/dep1/chat/completions?api-version=2024-06-01", "m-apikey")
    assert rec.header_all("api-key") == [OTHER_KEY]
    assert rec.header_all("authorization") == [] and rec.header_all("x-api-key") == []
    assert rec.header_all("host") == ["llm.example.test:8443"]
    assert rec.header_all("anthropic-version") == ["2023-06-01"]
    assert rec.header_all("x-provider-extra") == ["yes"]
    assert rec.header("x-client-own") == "kept"


def test_upstream_without_auth_gets_no_client_credentials(custom, mock_a, mock_b):
    """An upstream without auth: the client's credentials are still removed."""
    resp = send(custom, CHAT, chat(PROMPT, model="noauth"), CLIENT_CREDS)
    check_route(resp, "e-noauth", "m-noauth", "model:noauth")
    rec = only_request(mock_b, mock_a)
    check_upstream(rec, CHAT, "m-noauth")
    for name in CLIENT_CREDS:
        assert rec.header_all(name) == [], (name, rec.headers)


def test_authority_kept_when_upstream_has_no_host(custom, mock_a, mock_b):
    """Without upstream.host the client's :authority reaches the upstream unchanged."""
    resp = send(custom, CHAT, chat(PROMPT, model="bearer"), {"host": "client.example:1234"})
    check_route(resp, "a-bearer", "m-bearer", "model:bearer")
    assert only_request(mock_a, mock_b).header_all("host") == ["client.example:1234"]


@pytest.mark.core
def test_client_cannot_choose_cluster_via_cluster_header(bundled, mock_a, mock_b):
    """A client-sent x-llm-router-cluster neither picks the cluster nor reaches the upstream."""
    for name in ("x-llm-router-cluster", "X-LLM-Router-Cluster"):
        resp = send(bundled, CHAT, chat("Say hello", model="fast"), {name: "mock-b"})
        check_route(resp, "mock-a", "mock-small", "model:fast")
        check_upstream(only_request(mock_a, mock_b), CHAT, "mock-small")
        mock_a.clear()
        # Also on requests the router does not route (default Envoy route, mock-a).
        resp = send(bundled, "/v1/files/f-1", None, {name: "mock-b"}, method="GET")
        assert resp.status_code == 200
        rec = only_request(mock_a, mock_b)
        assert rec.path == "/v1/files/f-1" and rec.header("x-llm-router-cluster") is None
        mock_a.clear()
        resp = send(bundled, "/v1/files", b'{"model":"smart"}', {name: "mock-b"})
        assert resp.status_code == 200
        rec = only_request(mock_a, mock_b)
        assert rec.path == "/v1/files" and rec.header("x-llm-router-cluster") is None
        mock_a.clear()


# ---------------------------------------------------------------------------
# 9. Diagnostic response headers
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_diagnostic_headers_on_success(custom, mock_a, mock_b):
    """A routed 200 carries exactly upstream, model, task, complexity and rule (no tags)."""
    resp = send(custom, CHAT, chat(PROMPT))
    assert resp.status_code == 200
    assert router_headers(resp) == {
        "x-llm-router-upstream": "a-bearer",
        "x-llm-router-model": "m-default",
        "x-llm-router-task": "general",
        "x-llm-router-complexity": "low",
        "x-llm-router-rule": "default",
    }
    # The upstream's own answer is passed on with them.
    assert resp.headers["x-mock-upstream"] == "mock-a" and resp.headers["x-mock-model"] == "m-default"


def test_diagnostic_headers_on_upstream_error(custom, mock_a, mock_b):
    """An upstream's own error status is passed on, still with the routing headers."""
    mock_b.set_response(status=429, body={"error": {"message": "slow down"}}, times=1)
    resp = send(custom, CHAT, chat(PROMPT, model="xkey"))
    assert resp.status_code == 429
    assert resp.json() == {"error": {"message": "slow down"}}
    h = router_headers(resp)
    assert h["x-llm-router-upstream"] == "b-xkey" and h["x-llm-router-rule"] == "model:xkey", h


def test_tags_header_lists_matched_tags_in_config_order(custom, mock_a, mock_b):
    """x-llm-router-tags lists every matched tag, comma-separated, in configuration order."""
    text = "About the contract: TICKET-9876 and the unpaid invoice."
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat(text))
    check_route(resp, "a-bearer", "m-tag-kw", "rule:tag-kw", tags="finance,ticket,legal")
    mock_a.clear()
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat("Sign the contract for TICKET-0001"))
    check_route(resp, "a-bearer", "m-tag-re", "rule:tag-re", tags="ticket,legal")
    mock_a.clear()
    # A tag with no rule of its own is still reported (the default decides).
    resp, _, _ = route_custom(custom, mock_a, mock_b, chat("Sign the contract please"))
    check_route(resp, "a-bearer", "m-default", "default", tags="legal")


@pytest.mark.core
def test_upstream_cannot_forge_diagnostic_headers(custom, mock_a, mock_b):
    """x-llm-router-* on a routed response describe the router's decision, never the upstream's."""
    forged = {"x-llm-router-upstream": "forged", "x-llm-router-model": "forged",
              "x-llm-router-task": "forged", "x-llm-router-complexity": "forged",
              "x-llm-router-rule": "forged", "x-llm-router-tags": "forged"}
    mock_b.set_response(status=200, body={"ok": True}, headers=forged, times=1)
    # A passthrough model with a control character (no model header) and no matched tag.
    raw = b'{"model":"odd\\u0007model","messages":[{"role":"user","content":"Say hello please"}]}'
    resp = send(custom, CHAT, raw)
    assert resp.status_code == 200, resp.text
    check_upstream(only_request(mock_b, mock_a), "/openai/v1/chat/completions", "odd\u0007model", raw)
    assert router_headers(resp) == {
        "x-llm-router-upstream": "b-xkey",
        "x-llm-router-task": "general",
        "x-llm-router-complexity": "low",
        "x-llm-router-rule": "passthrough",
    }
