"""Limits across a fleet of Envoys: two Envoy processes (``--concurrency 2`` each) in front of
the same mocks and one rate-limit service (wasm-tests/ratelimit/, Limitador's engine) with
one Redis (Debian's redis-server), all started here on loopback.

Marked ``core`` (the compatibility run, every supported Envoy): the 100 concurrent requests
and both failure modes. The plugin configuration sets ``rate_limit_service``; the limit definitions the service
loads are Limitador's own format, made from that configuration by the same function the
README's ``make limits`` uses (``limit_definitions``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import yaml

from harness import REPO, EnvoyRouter, chat, load_bundled
from limit_definitions import definitions, limitador_limits
from ratelimit_service import RateLimitService, RedisServer

KEYS = {name: "sk-%s" % name for name in ("burst", "tokens", "spender", "open", "shut", "free")}
USAGE = {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}


def plugin_config(failure_mode: str = "allow") -> dict:
    h = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    return {
        "upstreams": {"a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}}},
        "models": {
            "cheap": {"targets": [{"upstream": "a", "model": "cheap-a"}]},
            # $1 per million tokens either way: 40 tokens cost 40 millionths.
            "priced": {"targets": [{"upstream": "a", "model": "priced-a",
                                    "price": {"input": 1, "output": 1}}]},
            "scarce": {"targets": [{"upstream": "a", "model": "scarce-a", "budget": {"rpm": 5}}]},
        },
        "default": {"use_model": "cheap"},
        "clients": {"keys": [
            {"name": "burst", "key_sha256": h(KEYS["burst"]), "rpm": 20},
            {"name": "tokens", "key_sha256": h(KEYS["tokens"]), "tpm": 100},
            {"name": "spender", "key_sha256": h(KEYS["spender"]), "monthly_budget": 0.00005},
            {"name": "open", "key_sha256": h(KEYS["open"]), "rpm": 1000},
            {"name": "shut", "key_sha256": h(KEYS["shut"]), "rpm": 1000},
            {"name": "free", "key_sha256": h(KEYS["free"])},
        ]},
        "rate_limit_service": {"cluster": "ratelimit", "timeout_ms": 200,
                               "failure_mode": failure_mode, "usage_report": "kuadrant"},
    }


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as r:
        yield r


@pytest.fixture(scope="module")
def service(redis):
    with RateLimitService(limitador_limits(plugin_config()), redis.url) as s:
        yield s


@pytest.fixture
def fleet(service, redis, mock_a, start_router):
    """Two Envoys in front of the same mock and service; the service's counters emptied."""
    redis.flushall()
    mock_a.set_response(200, {"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": USAGE})

    def start(failure_mode: str = "allow") -> list[EnvoyRouter]:
        return [start_router(mock_a=mock_a, extra_clusters={"ratelimit": service.port},
                             plugin_config=plugin_config(failure_mode), name="envoy-%d" % i)
                for i in (1, 2)]

    return start


def post(router: EnvoyRouter, client: str, model: str = "auto", timeout: float = 10.0, **extra):
    return httpx.post(router.url + "/v1/chat/completions", json=chat("hello", model=model, **extra),
                      headers={"authorization": "Bearer " + KEYS[client]}, timeout=timeout)


def wasm_counter(router: EnvoyRouter, name: str) -> int:
    """A filter stat's total wherever this Envoy files it (before 1.39: under the failover
    cluster's scope, README "Supported Envoy versions")."""
    found = router.counters("wasmcustom." + name)
    found.update(router.counters("cluster.llm_failover.wasmcustom." + name))
    return sum(found.values())


def settle() -> None:
    """Usage reports go out after the response: give them time to land."""
    time.sleep(0.3)


@pytest.mark.core
def test_rpm_holds_across_two_envoys_under_100_concurrent_requests(fleet):
    envoys = fleet()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda i: post(envoys[i % 2], "burst"), range(100)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 20 and codes.count(429) == 80, codes
    for a in answers:
        if a.status_code == 429:
            assert a.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(a.headers["retry-after"]) >= 1
            assert a.headers["x-ratelimit-limit-requests"] == "20"
    # Each Envoy served some of the 20: the count is the fleet's, not a process's.
    served = [wasm_counter(e, "llm_router.client.burst.requests") for e in envoys]
    assert sum(served) == 20 and all(n > 0 for n in served), served


def test_tpm_holds_across_both_envoys_with_reported_usage(fleet):
    a, b = fleet()
    # tpm 100: each request is charged its estimate at admission, then the rest of its 40
    # tokens when it ends; the fourth (120 used) is refused wherever it arrives.
    codes = []
    for router in (a, b, a, b):
        codes.append(post(router, "tokens").status_code)
        settle()
    assert codes == [200, 200, 200, 429], codes


def test_tpm_counts_the_usage_of_streams(fleet, mock_a):
    a, b = fleet()
    chunk = {"id": "s", "object": "chat.completion.chunk", "model": "cheap-a",
             "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}
    last = dict(chunk, choices=[], usage=USAGE)
    mock_a.set_stream([b"data: " + json.dumps(chunk).encode() + b"\n\n",
                       b"data: " + json.dumps(last).encode() + b"\n\n", b"data: [DONE]\n\n"])
    codes = []
    for router in (a, b, a, b):
        with httpx.stream("POST", router.url + "/v1/chat/completions", timeout=10.0,
                          json=chat("hello", stream=True, stream_options={"include_usage": True}),
                          headers={"authorization": "Bearer " + KEYS["tokens"]}) as r:
            r.read()
            codes.append(r.status_code)
        settle()
    # The streams' reported usage (40 each) counts as the answers' did.
    assert codes == [200, 200, 200, 429], codes


def test_budget_used_up_through_one_envoy_refuses_on_the_other_and_survives_restarts(fleet):
    a, b = fleet()
    # 40 millionths of a 50-millionth budget, then 80: the next is refused.
    assert post(a, "spender", model="priced").status_code == 200
    settle()
    assert post(b, "spender", model="priced").status_code == 200
    settle()
    refused = post(b, "spender", model="priced")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) >= 1
    for e in (a, b):
        e.stop()
    a, b = fleet()
    for router in (a, b):
        again = post(router, "spender", model="priced")
        assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota"


def test_target_budget_holds_across_both_envoys(fleet):
    envoys = fleet()
    codes = [post(envoys[i % 2], "free", model="scarce").status_code for i in range(8)]
    assert codes.count(200) == 5 and codes.count(429) == 3, codes


@pytest.mark.core
@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_service_down_follows_the_failure_mode_then_recovers(fleet, service, mode):
    a, b = fleet(mode)
    client = "open" if mode == "allow" else "shut"
    assert post(a, client).status_code == 200
    service.stop()
    try:
        for router in (a, b):
            started = time.monotonic()
            r = post(router, client, timeout=5.0)
            assert time.monotonic() - started < 3.0, "no request hangs"
            if mode == "allow":
                assert r.status_code == 200, r.text
            else:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "rate_limit_service_unavailable"
                assert r.headers["retry-after"] == "1"
        stat = "failure_mode_allowed" if mode == "allow" else "failure_mode_denied"
        assert wasm_counter(a, "llm_router.rate_limit_service." + stat) >= 1
    finally:
        service.restart()
    # Back: limits are checked again (and the service is asked: its counter moves).
    deadline = time.monotonic() + 5
    while True:
        r = post(b, client)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    assert wasm_counter(b, "llm_router.rate_limit_service.ok") >= 1


def test_the_examples_limit_definitions_are_what_make_limits_prints():
    """envoy/examples/fleet.{limitador,ratelimit}.yaml are the helper's output for fleet.json,
    so they cannot drift from the configuration; and Limitador's parses as its limits."""
    with open(os.path.join(REPO, "envoy", "examples", "fleet.json"), encoding="utf-8") as f:
        fleet = json.load(f)
    for fmt in ("limitador", "ratelimit"):
        with open(os.path.join(REPO, "envoy", "examples", "fleet.%s.yaml" % fmt), encoding="utf-8") as f:
            text = f.read()
        body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
        assert body == definitions(fleet, fmt), "run: make limits CONFIG=envoy/examples/fleet.json"
    limits = limitador_limits(fleet)
    assert {d["name"] for d in limits} >= {"client support-bot client_rpm", "target anthropic/claude-sonnet-4-5 target_tpm"}


def test_compose_runs_limitador_where_envoy_yaml_points_with_the_example_limits():
    with open(os.path.join(REPO, "compose.yaml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    limitador = compose["services"]["limitador"]
    assert limitador["profiles"] == ["limits"] and compose["services"]["redis"]["profiles"] == ["limits"]
    mount = limitador["volumes"][0].split(":")
    assert mount[0] == "./envoy/examples/fleet.limitador.yaml" and mount[1] == limitador["command"][-3]
    cmd = limitador["command"]
    rls_port = int(cmd[cmd.index("--rls-port") + 1])
    cluster = [c for c in load_bundled()["static_resources"]["clusters"] if c["name"] == "ratelimit"][0]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": rls_port}
    assert "http2_protocol_options" in cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    assert cmd[-2:] == ["redis", "redis://127.0.0.1:6379"]
