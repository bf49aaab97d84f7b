"""End-to-end stats: the router's Envoy stats on the admin ``/stats/prometheus``, with the
real Envoy on four worker threads (every VM defines the same stats; Envoy adds them up).

Each test uses its own aliases, so its targets and rules have stats of their own, and checks
the figures against what the mock providers received and answered.
"""

from __future__ import annotations

import time

import httpx
import pytest

from harness import (STATS_AT_ROOT, STATS_AT_ROOT_WHY, EnvoyRouter, chat, envoy_version, sample, scrape,
                     wait_for_samples)
from mock_provider import RESET_MID_STREAM

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
CHAT = "/v1/chat/completions"
PRICE = {"input": 2.0, "output": 8.0}  # USD per 1M tokens: 2 / 8 micro-USD per token


def duo(name: str, **a_extra) -> dict:
    return {"targets": [dict(upstream="a", model=name + "-a", price=PRICE, **a_extra),
                        {"upstream": "b", "model": name + "-b"}]}


CONFIG = {
    "upstreams": {
        "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        "b": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    },
    "models": {
        "plain": {"targets": [{"upstream": "a", "model": "plain-a", "price": PRICE}]},
        "fo": duo("fo"),
        "limited": duo("limited", budget={"rpm": 1}),
        "cool": duo("cool"),
        "cut": {"targets": [{"upstream": "a", "model": "cut-a"}]},
        "where": {"targets": [{"upstream": "a", "model": "where-a"}]},
    },
    "rules": [{"name": "hello", "match": {"model": ["auto"]}, "use_model": "plain"}],
    "unknown_model": "passthrough",
    "passthrough_upstream": "b",
    "health": {"allowed_fails": 0, "cooldown_seconds": 30, "failure_rate": None},
    "failover": {"cluster": "llm_failover"},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG,
                     env={"MOCK_API_KEY": MOCK_KEY}, concurrency=4, name="metrics") as r:
        yield r


def post(router: EnvoyRouter, body: dict) -> httpx.Response:
    return httpx.post(router.url + CHAT, json=body, timeout=10)


def usage_of(resp: httpx.Response) -> tuple[int, int]:
    u = resp.json()["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


@pytest.mark.core
def test_the_stats_are_where_this_envoy_files_them(router, mock_a):
    """At the root of the stats tree since Envoy 1.39; before, under the scope of the cluster
    whose upstream filter (the attempt filter on llm_failover) loaded the shared VM first
    (STATS_AT_ROOT_WHY), and nowhere else."""
    assert post(router, chat("Hi", model="where")).status_code == 200
    name = "wasmcustom.llm_router.target.a/where-a.requests"
    at_root = envoy_version()[:2] >= STATS_AT_ROOT
    want = name if at_root else "cluster.llm_failover." + name
    deadline = time.monotonic() + 5.0
    while True:
        status, text = router.stats_text("/stats")
        assert status == 200
        found = {line.split(": ")[0]: line.split(": ")[-1] for line in text.splitlines()
                 if line.split(": ")[0].endswith(name)}
        if found.get(want) == "1" or time.monotonic() > deadline:
            break
    assert found == {want: "1"}, (envoy_version(), found)


@pytest.mark.core
@pytest.mark.envoy_since(STATS_AT_ROOT, STATS_AT_ROOT_WHY)
def test_requests_tokens_cost_and_latency_per_target_and_rule(router, mock_a):
    prompt, completion = 0, 0
    for i in range(6):
        resp = post(router, chat("Say hello number %d" % i))
        assert resp.status_code == 200
        assert resp.headers["x-llm-router-rule"] == "rule:hello"
        p, c = usage_of(resp)
        prompt, completion = prompt + p, completion + c
    assert len(mock_a.requests) == 6
    cost = round(prompt * PRICE["input"] + completion * PRICE["output"])

    def check(s):
        for scope, label in (("target", "a/plain-a"), ("rule", "rule:hello")):
            kw = {scope: label}
            assert sample(s, "llm_router_%s_requests" % scope, **kw) == 6
            assert sample(s, "llm_router_%s_in_flight" % scope, **kw) == 0
            assert sample(s, "llm_router_%s_prompt_tokens" % scope, **kw) == prompt
            assert sample(s, "llm_router_%s_completion_tokens" % scope, **kw) == completion
            assert abs(sample(s, "llm_router_%s_cost_micro_usd" % scope, **kw) - cost) <= 6
            assert sample(s, "llm_router_%s_latency_ms_count" % scope, **kw) == 6
            assert sample(s, "llm_router_%s_ttfb_ms_count" % scope, **kw) == 6
            for cls in ("5xx", "429", "connect", "timeout"):
                assert sample(s, "llm_router_%s_failures" % scope, cls=cls, **kw) == 0
    wait_for_samples(router, check)


def test_failover_counts_the_failure_on_the_target_and_the_request_once_on_the_rule(
        router, mock_a, mock_b):
    mock_a.set_response(503, {"error": "down"}, times=1)
    resp = post(router, chat("Hi", model="fo"))
    assert resp.status_code == 200 and resp.headers["x-llm-router-attempts"] == "2"

    def check(s):
        assert sample(s, "llm_router_target_requests", target="a/fo-a") == 1
        assert sample(s, "llm_router_target_failures", target="a/fo-a", cls="5xx") == 1
        assert sample(s, "llm_router_target_failovers", target="a/fo-a") == 1
        assert sample(s, "llm_router_target_requests", target="b/fo-b") == 1
        assert sample(s, "llm_router_target_failures", target="b/fo-b", cls="5xx") == 0
        assert sample(s, "llm_router_rule_requests", rule="model:fo") == 1
        assert sample(s, "llm_router_rule_failures", rule="model:fo", cls="5xx") == 0
        assert sample(s, "llm_router_rule_in_flight", rule="model:fo") == 0
        # allowed_fails 0: the one failure opened a's circuit.
        assert sample(s, "llm_router_target_cooldowns", target="a/fo-a") == 1
    wait_for_samples(router, check)


def test_rate_limit_cooldown_and_budget_skips(router, mock_a, mock_b):
    mock_a.set_response(429, {"error": "slow down"}, headers={"retry-after": "30"}, times=1)
    assert post(router, chat("Hi", model="cool")).status_code == 200
    # The first request spends limited-a's one request per minute; the next two skip it.
    for _ in range(3):
        assert post(router, chat("Hi", model="limited")).status_code == 200

    def check(s):
        assert sample(s, "llm_router_target_failures", target="a/cool-a", cls="429") == 1
        assert sample(s, "llm_router_target_cooldowns", target="a/cool-a") == 1
        assert sample(s, "llm_router_target_requests", target="a/limited-a") == 1
        assert sample(s, "llm_router_target_budget_skips", target="a/limited-a") == 2
        assert sample(s, "llm_router_rule_budget_skips", rule="model:limited") == 2
        assert sample(s, "llm_router_target_requests", target="b/limited-b") == 2
    wait_for_samples(router, check)


@pytest.mark.core
@pytest.mark.envoy_since(STATS_AT_ROOT, STATS_AT_ROOT_WHY)
def test_client_model_names_never_create_stats(router, mock_b):
    for i in range(20):
        resp = post(router, chat("Hi", model="client-model-%d" % i))
        assert resp.status_code == 200
    def check(s):
        assert sample(s, "llm_router_target_requests", target="b/*") == 20
    samples = wait_for_samples(router, check)
    labels = {v for (_, ls), _ in samples.items() for k, v in ls if k in ("target", "rule")}
    assert not any("client-model" in label for label in labels), labels
    # A fixed set per configuration: its targets + b/* and its aliases and rule + passthrough.
    assert {v for (n, ls), _ in samples.items() for k, v in ls if k == "target"} == {
        "a/plain-a", "a/fo-a", "b/fo-b", "a/limited-a", "b/limited-b", "a/cool-a", "b/cool-b",
        "a/cut-a", "a/where-a", "b/*"}
    assert {v for (n, ls), _ in samples.items() for k, v in ls if k == "rule"} == {
        "rule:hello", "model:plain", "model:fo", "model:limited", "model:cool", "model:cut",
        "model:where", "passthrough"}


def test_a_stream_the_upstream_resets_counts_as_a_connect_failure(router, mock_a):
    """The provider starts streaming, then drops the connection: the client gets a cut
    stream, and the request ends as a failure of the target (nothing left in flight)."""
    mock_a.set_response(RESET_MID_STREAM, times=1)
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("POST", router.url + CHAT, json=chat("Hi", model="cut", stream=True),
                          timeout=10) as resp:
            assert resp.status_code == 200
            for _ in resp.iter_bytes():
                pass

    def check(s):
        assert sample(s, "llm_router_target_requests", target="a/cut-a") == 1
        assert sample(s, "llm_router_target_failures", target="a/cut-a", cls="connect") == 1
        assert sample(s, "llm_router_target_in_flight", target="a/cut-a") == 0
        assert sample(s, "llm_router_rule_failures", rule="model:cut", cls="connect") == 1
    wait_for_samples(router, check)
