"""End-to-end health tests: shared health counters, cooldown, half-open probe, Retry-After,
least_busy / lowest_latency and budgets, with the real Envoy on four worker threads.

One Envoy (``--concurrency 4``) for the module, in front of the two mock providers, with a
health section of small numbers (``allowed_fails: 2``, ``cooldown_seconds: 2``). Each test
uses its own model names, so its targets have their own health-board keys. Every request
goes on a new connection, so requests land on different Envoy workers: the counters only add
up across requests because they live in shared data.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness import EnvoyRouter, chat, closed_port

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
CHAT = "/v1/chat/completions"
ALLOWED_FAILS = 2
COOLDOWN_S = 2.0


def pair(name: str, strategy: str = "priority", **a_extra) -> dict:
    """Alias ``name`` over a/<name>-a then b/<name>-b."""
    return {"strategy": strategy,
            "targets": [dict(upstream="a", model=name + "-a", **a_extra),
                        {"upstream": "b", "model": name + "-b"}]}


CONFIG = {
    "upstreams": {
        "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        "b": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        # Nothing listens behind mock-c: every connection is refused.
        "c": {"cluster": "mock-c"},
    },
    "models": {
        "failover": pair("failover"),
        "limited": pair("limited"),
        "busy": pair("busy", "least_busy"),
        "quick": pair("quick", "lowest_latency"),
        "capped": pair("capped", budget={"rpm": 5}),
        "flaky": pair("flaky"),
        "tokens": pair("tokens", budget={"tpm": 100}),
        "abandoned": pair("abandoned", "least_busy"),
        "streamed": pair("streamed", "least_busy"),
        "dead": {"targets": [{"upstream": "c", "model": "dead-c"},
                             {"upstream": "b", "model": "dead-b"}]},
    },
    "health": {"allowed_fails": ALLOWED_FAILS, "cooldown_seconds": COOLDOWN_S,
               "failure_rate": None},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, extra_clusters={"mock-c": closed_port()},
                     plugin_config=CONFIG, env={"MOCK_API_KEY": MOCK_KEY}, concurrency=4,
                     name="health") as r:
        yield r


@pytest.fixture(autouse=True)
def _normal_latency(_mock_a, _mock_b):
    yield
    _mock_a.latency_ms = 0
    _mock_b.latency_ms = 0


def send(router: EnvoyRouter, model: str, timeout: float = 10.0) -> httpx.Response:
    """One request on a new connection (so on any worker)."""
    return httpx.post(router.url + CHAT, json=chat("Say hello please", model=model), timeout=timeout)


def served_by(resp: httpx.Response) -> str:
    return resp.headers.get("x-llm-router-upstream", "?")


def requests_for(mock, model: str) -> int:
    return sum(1 for r in mock.requests if r.json().get("model") == model)


def test_failing_target_is_left_then_one_probe_brings_it_back(router, mock_a, mock_b):
    mock_a.set_response(503, {"error": {"message": "overloaded"}})
    statuses = []
    for _ in range(ALLOWED_FAILS + 1):
        resp = send(router, "failover")
        assert served_by(resp) == "a"
        statuses.append(resp.status_code)
    tripped_at = time.monotonic()
    assert statuses == [503] * (ALLOWED_FAILS + 1)
    # Tripped: on every worker, traffic now goes to b. Had each worker counted on its own,
    # a would have taken up to four times allowed_fails + 1 requests.
    for _ in range(12):
        resp = send(router, "failover")
        assert (resp.status_code, served_by(resp)) == (200, "b")
    assert requests_for(mock_a, "failover-a") == ALLOWED_FAILS + 1
    assert time.monotonic() - tripped_at < COOLDOWN_S, "the checks took longer than the cooldown"

    # After the cooldown exactly one probe goes to a (slow, so others arrive meanwhile).
    mock_a.reset_response()
    mock_a.clear()
    # Long enough that the six others all arrive while it runs, even on a loaded machine.
    mock_a.latency_ms = 2500
    time.sleep(max(0.0, tripped_at + COOLDOWN_S + 0.2 - time.monotonic()))
    with ThreadPoolExecutor(max_workers=8) as pool:
        probe = pool.submit(send, router, "failover")
        time.sleep(0.3)
        others = list(pool.map(lambda _: send(router, "failover"), range(6)))
        probe = probe.result()
    assert (probe.status_code, served_by(probe)) == (200, "a")
    assert [served_by(r) for r in others] == ["b"] * 6
    assert requests_for(mock_a, "failover-a") == 1, "exactly one probe"
    # The probe succeeded: a is trusted again.
    mock_a.latency_ms = 0
    for _ in range(4):
        resp = send(router, "failover")
        assert (resp.status_code, served_by(resp)) == (200, "a")


def test_retry_after_keeps_the_target_out_for_that_long(router, mock_a, mock_b):
    mock_a.set_response(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "2"}, times=1)
    resp = send(router, "limited")
    limited_at = time.monotonic()
    assert (resp.status_code, served_by(resp)) == (429, "a")
    back_after = None
    while time.monotonic() - limited_at < 5.0:
        resp = send(router, "limited")
        assert resp.status_code == 200
        if served_by(resp) == "a":
            back_after = time.monotonic() - limited_at
            break
        assert served_by(resp) == "b"
        time.sleep(0.05)
    assert back_after is not None, "a never came back"
    assert 1.5 <= back_after <= 3.5, back_after


def test_least_busy_avoids_the_target_with_slow_requests_in_flight(router, mock_a, mock_b):
    mock_a.latency_ms = 1500
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(send, router, "busy")
        mock_a.wait_for_requests(1)
        during = [served_by(send(router, "busy")) for _ in range(5)]
        slow = slow.result()
    assert served_by(slow) == "a", "both idle: the first target"
    assert during == ["b"] * 5, "a has a request in flight, b none"
    mock_a.latency_ms = 0
    assert served_by(send(router, "busy")) == "a", "idle again: configured order"


def test_lowest_latency_prefers_the_faster_target(router, mock_a, mock_b):
    mock_a.latency_ms = 300
    first = send(router, "quick")
    assert served_by(first) == "a", "no samples yet: configured order"
    second = send(router, "quick")
    assert served_by(second) == "b", "b has no sample yet: it is measured next"
    rest = [served_by(send(router, "quick")) for _ in range(5)]
    assert rest == ["b"] * 5


def test_budget_caps_a_targets_share(router, mock_a, mock_b):
    served = [served_by(send(router, "capped")) for _ in range(12)]
    assert served.count("a") == 5, served
    assert served.count("b") == 7, served
    assert served[:5] == ["a"] * 5
    assert requests_for(mock_a, "capped-a") == 5


def test_token_budget_counts_the_usage_providers_report(router, mock_a, mock_b):
    first = send(router, "tokens")
    assert served_by(first) == "a"
    per_request = first.json()["usage"]["total_tokens"]
    assert per_request > 10, "the prompt estimate alone would be smaller"
    served = ["a"] + [served_by(send(router, "tokens")) for _ in range(9)]
    expected_a = -(-100 // per_request)  # admitted while the minute's total is under 100
    assert served == ["a"] * expected_a + ["b"] * (10 - expected_a), (per_request, served)


def test_client_errors_do_not_cool_a_target_down(router, mock_a, mock_b):
    mock_a.set_response(400, {"error": {"message": "bad request"}}, times=ALLOWED_FAILS + 3)
    for _ in range(ALLOWED_FAILS + 3):
        resp = send(router, "flaky")
        assert (resp.status_code, served_by(resp)) == (400, "a")
    resp = send(router, "flaky")
    assert (resp.status_code, served_by(resp)) == (200, "a")


def test_refused_connections_count_as_failures(router, mock_a, mock_b):
    for _ in range(ALLOWED_FAILS + 1):
        resp = send(router, "dead")
        assert (resp.status_code, served_by(resp)) == (503, "c"), resp.text
    for _ in range(5):
        resp = send(router, "dead")
        assert (resp.status_code, served_by(resp)) == (200, "b")


def test_abandoned_and_streamed_requests_leave_nothing_in_flight(router, mock_a, mock_b):
    # The client gives up on a slow answer: the stream ends without a response, and the
    # request must still be finished (in flight back to 0), or least_busy would avoid a for
    # good (b would stay the one with fewer in flight).
    mock_a.latency_ms = 1000
    with pytest.raises(httpx.TimeoutException):
        httpx.post(router.url + CHAT, json=chat("Say hello please", model="abandoned"), timeout=0.3)
    mock_a.wait_for_requests(1)
    mock_a.latency_ms = 0
    deadline = time.monotonic() + 3.0
    while served_by(send(router, "abandoned")) != "a":
        assert time.monotonic() < deadline, "the abandoned request never left a's in-flight count"
        time.sleep(0.1)
    # A streamed answer is finished when its stream ends.
    with httpx.stream("POST", router.url + CHAT, timeout=10,
                      json=chat("Say hello please", model="streamed", stream=True)) as resp:
        assert (resp.status_code, served_by(resp)) == (200, "a")
        text = "".join(resp.iter_text())
    assert "[DONE]" in text
    assert served_by(send(router, "streamed")) == "a", "nothing left in flight on a"


def test_all_unhealthy_can_be_refused_with_retry_after(start_router, mock_a):
    config = {
        "upstreams": {"a": {"cluster": "mock-a"}},
        "models": {"only": {"targets": [{"upstream": "a", "model": "only-a"}]}},
        "health": {"allowed_fails": 0, "cooldown_seconds": 3, "when_all_unhealthy": "reject"},
    }
    r = start_router(mock_a=mock_a, plugin_config=config, concurrency=4, name="health-reject")
    mock_a.set_response(500, {"error": {"message": "boom"}}, times=1)
    assert send(r, "only").status_code == 500
    resp = send(r, "only")
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_available_target"
    assert resp.headers.get("retry-after") in ("2", "3"), resp.headers
    assert len(mock_a.requests) == 1, "refused without reaching the provider"
