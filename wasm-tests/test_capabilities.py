"""End-to-end target capabilities, with the real Envoy and two mock providers.

Each alias puts a target that lacks one capability (on mock-a) in front of one that has it
(on mock-b): a request that needs the capability must reach mock-b, with its body rewritten
for that target, and mock-a must receive nothing; a request that does not need it stays on
mock-a. Without the feature every request would go to mock-a, so each test fails then.
Further: ``provider.require_parameters``, the 503 naming every skipped candidate, the
``capability_skips`` stats, and the failover of a provider's "context length exceeded" 400
to a candidate with a larger window (through the bundled ``llm_failover`` route).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from harness import EnvoyRouter, assert_openai_error, chat, jdump

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
CHAT = "/v1/chat/completions"
IMAGE = [{"type": "text", "text": "What is in this picture?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}


def pair(name: str, lacks: dict, has: dict | None = None) -> dict:
    """Alias ``name``: a/<name>-a declaring ``lacks``, then b/<name>-b declaring ``has``."""
    b = {"upstream": "b", "model": name + "-b"}
    if has is not None:
        b["capabilities"] = has
    return {"targets": [{"upstream": "a", "model": name + "-a", "capabilities": lacks}, b]}


UPSTREAMS = {
    "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    "b": {"cluster": "mock-b", "path_prefix": "/openai/v1",
          "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
}
#: A provider's context-length 400, as OpenAI answers it.
CONTEXT_400 = json.dumps({"error": {
    "message": "This model's maximum context length is 8192 tokens. However, your messages "
               "resulted in 9013 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
PLAIN_400 = json.dumps({"error": {"message": "Invalid value for 'temperature': 3.",
                                  "type": "invalid_request_error", "param": "temperature",
                                  "code": "invalid_value"}})
CTX = {"targets": [
    {"upstream": "a", "model": "ctx-8k", "capabilities": {"context_window": 8192}},
    {"upstream": "a", "model": "ctx-8k-too", "capabilities": {"context_window": 8192}},
    {"upstream": "b", "model": "ctx-128k", "capabilities": {"context_window": 128000}},
]}

CONFIG = {
    "upstreams": UPSTREAMS,
    # By model id: applies to every target with that model (b/vision-b below).
    "capabilities": {"vision-b": {"vision": True, "context_window": 128000}},
    "models": {
        "vision": pair("vision", {"vision": False}),
        "tools": pair("tools", {"tools": False}, {"tools": True}),
        "json": pair("json", {"json_output": False, "structured_outputs": True}),
        "schema": pair("schema", {"structured_outputs": False, "json_output": True}),
        "stream": pair("stream", {"streaming": False}),
        "window": pair("window", {"context_window": 8192}, {"context_window": 128000}),
        "output": pair("output", {"max_output_tokens": 4096}),
        # Nothing declared on a: unknown, which skips only with require_parameters.
        "strict": {"targets": [{"upstream": "a", "model": "strict-a"},
                               {"upstream": "b", "model": "strict-b",
                                "capabilities": {"tools": True, "vision": True, "streaming": True}}]},
        "none": pair("none", {"vision": False}, {"vision": False, "context_window": 16000}),
        "ctx": CTX,
        "ctx-last": {"targets": [
            {"upstream": "b", "model": "last-128k", "capabilities": {"context_window": 128000}},
            {"upstream": "a", "model": "last-8k", "capabilities": {"context_window": 8192}}]},
    },
    "failover": {"cluster": "llm_failover", "max_attempts": 3},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG,
                     env={"MOCK_API_KEY": MOCK_KEY}, name="capabilities") as r:
        yield r


def post(router: EnvoyRouter, body: dict, path: str = CHAT) -> httpx.Response:
    """The body as exact bytes, on a new connection."""
    return httpx.post(router.url + path, content=jdump(body),
                      headers={"content-type": "application/json",
                               "authorization": "Bearer client-secret"}, timeout=10)


def served_by_b(resp, mock_a, mock_b, body: dict, model: str, path: str = CHAT) -> None:
    """The request reached mock-b as ``model`` (the client's bytes otherwise) and not mock-a."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "b"
    assert resp.headers["x-llm-router-model"] == model
    assert mock_a.requests == []
    [rec] = mock_b.requests
    assert rec.path == "/openai/v1" + path[len("/v1"):]
    assert rec.body == jdump({**body, "model": model})
    assert rec.header("x-api-key") == MOCK_KEY and rec.header("authorization") is None


def served_by_a(resp, mock_a, mock_b, model: str) -> dict:
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "a"
    assert resp.headers["x-llm-router-model"] == model
    assert mock_b.requests == []
    [rec] = mock_a.requests
    assert rec.json()["model"] == model
    return rec.json()


def fresh(*mocks) -> None:
    for m in mocks:
        m.clear()
        m.reset_response()


def skips(router: EnvoyRouter) -> dict:
    """The capability-skip counters that are not 0, as ``{(target, reason): n}``."""
    out = {}
    for name, n in router.counters("wasmcustom.llm_router.target.").items():
        head, sep, reason = name.rpartition(".capability_skips.")
        if sep:
            out[(head[len("wasmcustom.llm_router.target."):], reason)] = n
    return out


# ---------------------------------------------------------------------------------------
# One test per constraint
# ---------------------------------------------------------------------------------------


def test_images_skip_a_target_without_vision(router, mock_a, mock_b):
    body = chat(IMAGE, model="vision")
    served_by_b(post(router, body), mock_a, mock_b, body, "vision-b")
    fresh(mock_a, mock_b)
    # Text only: the first target serves.
    served_by_a(post(router, chat("Hi", model="vision")), mock_a, mock_b, "vision-a")


def test_tools_skip_a_target_without_tools(router, mock_a, mock_b):
    body = chat("Weather in Paris?", model="tools", tools=TOOLS, tool_choice="auto")
    served_by_b(post(router, body), mock_a, mock_b, body, "tools-b")
    fresh(mock_a, mock_b)
    served_by_a(post(router, chat("Hi", model="tools")), mock_a, mock_b, "tools-a")


def test_json_output_skips_a_target_without_it(router, mock_a, mock_b):
    body = chat("Answer in JSON", model="json", response_format={"type": "json_object"})
    served_by_b(post(router, body), mock_a, mock_b, body, "json-b")
    fresh(mock_a, mock_b)
    # json-a declares structured outputs: a json_schema request stays on it.
    received = served_by_a(post(router, chat("Hi", model="json", response_format=SCHEMA)),
                           mock_a, mock_b, "json-a")
    assert received["response_format"] == SCHEMA


def test_structured_outputs_skip_a_target_without_them(router, mock_a, mock_b):
    body = chat("Answer by the schema", model="schema", response_format=SCHEMA)
    served_by_b(post(router, body), mock_a, mock_b, body, "schema-b")
    fresh(mock_a, mock_b)
    # The Responses API asks for it in text.format.
    body = {"model": "schema", "input": "Answer by the schema",
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}}
    served_by_b(post(router, body, "/v1/responses"), mock_a, mock_b, body, "schema-b",
                "/v1/responses")
    fresh(mock_a, mock_b)
    received = served_by_a(post(router, chat("Hi", model="schema", response_format={"type": "json_object"})),
                           mock_a, mock_b, "schema-a")
    assert received["response_format"] == {"type": "json_object"}


def test_streaming_skips_a_target_that_cannot_stream(router, mock_a, mock_b):
    body = chat("Stream a story", model="stream", stream=True)
    with httpx.stream("POST", router.url + CHAT, content=jdump(body),
                      headers={"content-type": "application/json"}, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-llm-router-model"] == "stream-b"
        text = b"".join(resp.iter_bytes()).decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert mock_a.requests == []
    [rec] = mock_b.requests
    assert rec.body == jdump({**body, "model": "stream-b"})
    fresh(mock_a, mock_b)
    served_by_a(post(router, chat("Hi", model="stream", stream=False)), mock_a, mock_b, "stream-a")


def test_the_context_window_holds_prompt_estimate_plus_output_cap(router, mock_a, mock_b):
    # 36,000 characters: about 9,000 estimated tokens, over a-8k's 8192.
    body = chat("x" * 36000, model="window")
    served_by_b(post(router, body), mock_a, mock_b, body, "window-b")
    # A short prompt with an output cap that no longer fits beside it.
    for cap in ("max_tokens", "max_completion_tokens"):
        fresh(mock_a, mock_b)
        body = chat("Hi", model="window", **{cap: 8190})
        served_by_b(post(router, body), mock_a, mock_b, body, "window-b")
    fresh(mock_a, mock_b)
    served_by_a(post(router, chat("Hi", model="window", max_tokens=1000)), mock_a, mock_b, "window-a")


def test_the_output_cap_must_fit_max_output_tokens(router, mock_a, mock_b):
    body = chat("Write a lot", model="output", max_tokens=5000)
    served_by_b(post(router, body), mock_a, mock_b, body, "output-b")
    # Anthropic's max_tokens on /v1/messages, and the Responses API's max_output_tokens.
    fresh(mock_a, mock_b)
    body = {"model": "output", "max_tokens": 8000, "messages": [{"role": "user", "content": "Hi"}]}
    served_by_b(post(router, body, "/v1/messages"), mock_a, mock_b, body, "output-b", "/v1/messages")
    fresh(mock_a, mock_b)
    body = {"model": "output", "input": "Hi", "max_output_tokens": 4097}
    served_by_b(post(router, body, "/v1/responses"), mock_a, mock_b, body, "output-b", "/v1/responses")
    fresh(mock_a, mock_b)
    served_by_a(post(router, chat("Hi", model="output", max_tokens=4096)), mock_a, mock_b, "output-a")


# ---------------------------------------------------------------------------------------
# require_parameters
# ---------------------------------------------------------------------------------------


def test_require_parameters_true_keeps_targets_that_declare_what_the_request_uses(router, mock_a, mock_b):
    body = chat("Weather?", model="strict", tools=TOOLS, provider={"require_parameters": True})
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-model"] == "strict-b"
    assert mock_a.requests == []
    [rec] = mock_b.requests
    # The router-only member is cut from the body; the rest is the client's bytes.
    body.pop("provider")
    assert rec.body == jdump({**body, "model": "strict-b"})
    # A request that uses nothing keeps every target, declared or not.
    fresh(mock_a, mock_b)
    resp = post(router, chat("Hi", model="strict", provider={"require_parameters": True}))
    assert resp.headers["x-llm-router-model"] == "strict-a"
    assert "provider" not in mock_a.requests[0].json()


def test_require_parameters_false_or_absent_lets_undeclared_targets_serve(router, mock_a, mock_b):
    for provider in ({"require_parameters": False}, None, {"require_parameters": True}):
        fresh(mock_a, mock_b)
        extra = {"provider": provider} if provider is not None else {}
        resp = post(router, chat(IMAGE, model="strict", tools=TOOLS, **extra))
        if provider == {"require_parameters": True}:
            # The same request, strict: strict-a declares neither vision nor tools.
            assert resp.headers["x-llm-router-model"] == "strict-b"
        else:
            served_by_a(resp, mock_a, mock_b, "strict-a")


def test_require_parameters_must_be_a_boolean(router, mock_a, mock_b):
    resp = post(router, chat("Hi", model="strict", provider={"require_parameters": "yes"}))
    err = assert_openai_error(resp, 400, "invalid_type", param="provider.require_parameters")
    assert "provider.require_parameters" in err["message"]
    assert mock_a.requests == [] and mock_b.requests == []


# ---------------------------------------------------------------------------------------
# Nothing left: the 503, and the stats
# ---------------------------------------------------------------------------------------


def test_no_capable_candidate_is_a_503_naming_each_and_counted(router, mock_a, mock_b):
    before = skips(router)
    resp = post(router, chat(IMAGE, model="none"))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert err["message"] == ("No target is available for this request (model:none): "
                              "a/none-a: no vision; b/none-b: no vision.")
    assert mock_a.requests == [] and mock_b.requests == []
    # Two reasons on one request: the window of none-b, and none-a's vision.
    resp = post(router, chat([{"type": "text", "text": "y" * 70000}, IMAGE[1]], model="none",
                             provider={"require_parameters": True}))
    err = assert_openai_error(resp, 503, "no_available_target")
    assert "a/none-a: no vision" in err["message"], err
    assert "b/none-b: context window 16000 < " in err["message"], err
    after = skips(router)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: v for k, v in grew.items() if v} == {
        ("a/none-a", "vision"): 2, ("b/none-b", "vision"): 1, ("b/none-b", "context_window"): 1}
    # The bundled stats_tags give them target and reason labels.
    _, text = router.stats_text("/stats/prometheus")
    assert 'llm_router_target_capability_skips{target="a/none-a",reason="vision"} ' in text, text[:2000]
    # The access log says what the client got.
    deadline = time.monotonic() + 5
    while True:
        lines = [ln for ln in router.access_log() if ln.get("requested_model") == "none"]
        if len(lines) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(ln["status"], ln["error"]) for ln in lines] == [(503, "no_available_target")] * 2


def test_routing_skips_are_counted_per_request(router, mock_a, mock_b):
    before = skips(router).get(("a/vision-a", "vision"), 0)
    for _ in range(3):
        assert post(router, chat(IMAGE, model="vision")).status_code == 200
    assert skips(router).get(("a/vision-a", "vision"), 0) - before == 3
    assert len(mock_b.requests) == 3 and mock_a.requests == []


# ---------------------------------------------------------------------------------------
# A provider's "context length exceeded" 400
# ---------------------------------------------------------------------------------------


def fails_over_on_context_length(router, mock_a, mock_b) -> None:
    """The control of the tests below: mock-a's context-length 400 on alias ``ctx`` is
    retried on ctx-128k (so they fail when the feature is gone)."""
    fresh(mock_a, mock_b)
    mock_a.set_response(400, CONTEXT_400, times=1)
    resp = post(router, chat("Hi", model="ctx"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-model"] == "ctx-128k"
    assert [r.json()["model"] for r in mock_a.requests] == ["ctx-8k"]
    assert [r.json()["model"] for r in mock_b.requests] == ["ctx-128k"]
    fresh(mock_a, mock_b)


def test_context_length_400_fails_over_to_the_next_larger_window(router, mock_a, mock_b):
    mock_a.set_response(400, CONTEXT_400, times=1)
    before = skips(router)
    body = chat("A long prompt the estimate thought would fit", model="ctx", temperature=0.5)
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "b"
    assert resp.headers["x-llm-router-model"] == "ctx-128k"
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert "x-llm-router-retry" not in resp.headers
    assert resp.json()["model"] == "ctx-128k"
    # ctx-8k was tried once; ctx-8k-too (no larger window) was skipped; ctx-128k served.
    [ra] = mock_a.requests
    assert ra.body == jdump({**body, "model": "ctx-8k"})
    [rb] = mock_b.requests
    assert rb.body == jdump({**body, "model": "ctx-128k"})
    assert rb.path == "/openai/v1/chat/completions"
    for rec in (ra, rb):
        for internal in ("x-llm-router-failover", "x-llm-router-retry", "x-envoy-attempt-count"):
            assert rec.header(internal) is None
    after = skips(router)
    assert after.get(("a/ctx-8k-too", "context_window"), 0) - before.get(("a/ctx-8k-too", "context_window"), 0) == 1


def test_anthropic_prompt_too_long_fails_over_too(router, mock_a, mock_b):
    mock_a.set_response(400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}},
        times=1)
    body = {"model": "ctx", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    resp = post(router, body, "/v1/messages")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-model"] == "ctx-128k"
    assert [r.json()["model"] for r in mock_a.requests] == ["ctx-8k"]
    assert [r.json()["model"] for r in mock_b.requests] == ["ctx-128k"]


def test_a_plain_400_is_never_retried(router, mock_a, mock_b):
    fails_over_on_context_length(router, mock_a, mock_b)
    mock_a.set_response(400, PLAIN_400, times=1)
    resp = post(router, chat("Hi", model="ctx", temperature=3))
    assert resp.status_code == 400
    assert resp.content == PLAIN_400.encode()
    assert resp.headers["x-llm-router-model"] == "ctx-8k"
    assert "x-llm-router-retry" not in resp.headers
    assert len(mock_a.requests) == 1 and mock_b.requests == []


def test_no_larger_window_left_gives_the_client_the_400(router, mock_a, mock_b):
    fails_over_on_context_length(router, mock_a, mock_b)
    mock_b.set_response(400, CONTEXT_400, times=1)
    resp = post(router, chat("Hi", model="ctx-last"))
    assert resp.status_code == 400
    assert resp.content == CONTEXT_400.encode()
    assert resp.headers["x-llm-router-model"] == "last-128k"
    assert "x-llm-router-retry" not in resp.headers
    assert len(mock_b.requests) == 1 and mock_a.requests == []


def test_without_failover_the_client_gets_the_400_as_it_came(router, start_router, _mock_a, _mock_b):
    fails_over_on_context_length(router, _mock_a, _mock_b)
    config = {k: v for k, v in CONFIG.items() if k != "failover"}
    router = start_router(mock_a=_mock_a, mock_b=_mock_b, plugin_config=config, name="caps-nofo")
    fresh(_mock_a, _mock_b)
    try:
        _mock_a.set_response(400, CONTEXT_400, times=1)
        resp = post(router, chat("Hi", model="ctx"))
        assert resp.status_code == 400
        assert resp.content == CONTEXT_400.encode()
        assert resp.headers["x-llm-router-model"] == "ctx-8k"
        assert "x-llm-router-attempts" not in resp.headers
        assert len(_mock_a.requests) == 1 and _mock_b.requests == []
    finally:
        fresh(_mock_a, _mock_b)


def test_a_provider_cannot_ask_for_the_retry_itself(router, mock_a, mock_b):
    """The hop drops a provider-sent x-llm-router-retry: a plain 400 carrying it is not
    retried."""
    fails_over_on_context_length(router, mock_a, mock_b)
    mock_a.set_response(400, PLAIN_400, headers={"x-llm-router-retry": "context_length_exceeded"},
                        times=1)
    resp = post(router, chat("Hi", model="ctx"))
    assert resp.status_code == 400
    assert "x-llm-router-retry" not in resp.headers
    assert len(mock_a.requests) == 1 and mock_b.requests == []
