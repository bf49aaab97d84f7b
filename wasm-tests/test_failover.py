"""End-to-end failover within one request, with the real Envoy on four worker threads.

The request filter sends a request that has several usable candidates to the bundled
``llm_failover`` cluster; Envoy's router retries it there on 429, 5xx, reset or connect
failure; the router's attempt filter (the same .wasm as an upstream filter of that cluster)
rewrites each attempt for the next candidate; the internal hop listener routes it to that
candidate's cluster. These tests check what each mock provider received on every attempt,
what the client got, and what the health counters made of the failed attempts.
"""

from __future__ import annotations

import json

import httpx
import pytest

from harness import EnvoyRouter, chat, closed_port, jdump
from mock_provider import RESET

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
CHAT = "/v1/chat/completions"
ALLOWED_FAILS = 2
INTERNAL = ("x-llm-router-failover", "x-llm-router-path", "x-llm-router-authority",
            "x-llm-router-cluster", "x-envoy-attempt-count", "x-envoy-max-retries")


def duo(name: str, *more: dict) -> dict:
    """Alias ``name``: a/<name>-a first, then b/<name>-b, then ``more``."""
    return {"targets": [{"upstream": "a", "model": name + "-a"},
                        {"upstream": "b", "model": name + "-b-longer"}, *more]}


CONFIG = {
    "upstreams": {
        "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        # Another path prefix, host, credential header and extra header than a.
        "b": {"cluster": "mock-b", "path_prefix": "/openai/v1", "host": "b.example",
              "headers": {"x-b-version": "2"},
              "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        # Nothing listens behind mock-c: every connection is refused.
        "c": {"cluster": "mock-c"},
    },
    "models": {
        "rate": duo("rate"),
        "down": duo("down"),
        "reset": duo("reset"),
        "refused": {"targets": [{"upstream": "c", "model": "refused-c"},
                                {"upstream": "a", "model": "refused-a"}]},
        "stream": duo("stream"),
        "nofb": duo("nofb"),
        "allbad": duo("allbad"),
        "three": duo("three", {"upstream": "a", "model": "three-a2"}),
        "cool": duo("cool"),
        "big": duo("big"),
        "spoof": duo("spoof"),
    },
    "health": {"allowed_fails": ALLOWED_FAILS, "cooldown_seconds": 30, "failure_rate": None},
    "failover": {"cluster": "llm_failover", "max_attempts": 2},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, extra_clusters={"mock-c": closed_port()},
                     plugin_config=CONFIG, env={"MOCK_API_KEY": MOCK_KEY}, concurrency=4,
                     name="failover") as r:
        yield r


def post(router: EnvoyRouter, body: dict, headers: dict | None = None, **kw) -> httpx.Response:
    """One request on a new connection (so on any worker), sent as exact bytes."""
    hdrs = {"content-type": "application/json", "authorization": "Bearer client-secret"}
    hdrs.update(headers or {})
    return httpx.post(router.url + CHAT, content=jdump(body), headers=hdrs, timeout=10, **kw)


def expected_body(body: dict, model: str) -> bytes:
    return jdump({**body, "model": model})


def check_clean(rec, upstream: str) -> None:
    """What a provider must (not) see: its own credential only, no router-internal header."""
    for name in INTERNAL:
        assert rec.header(name) is None, (name, rec.header(name))
    assert rec.header("content-length") == str(len(rec.body))
    if upstream == "a":
        assert rec.header("authorization") == "Bearer " + MOCK_KEY
        assert rec.header("x-api-key") is None and rec.header("x-b-version") is None
        assert rec.path == CHAT
    else:
        assert rec.header("x-api-key") == MOCK_KEY
        assert rec.header("authorization") is None
        assert rec.header("x-b-version") == "2" and rec.header("host") == "b.example"
        assert rec.path == "/openai/v1/chat/completions"


@pytest.mark.core
def test_429_moves_the_request_to_the_next_candidate(router, mock_a, mock_b):
    mock_a.set_response(429, {"error": {"message": "slow down"}}, times=1)
    body = chat("Say hello", model="rate", temperature=0.25)
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "b"
    assert resp.headers["x-llm-router-model"] == "rate-b-longer"
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert "x-llm-router-served" not in resp.headers
    assert resp.json()["model"] == "rate-b-longer"
    [ra] = mock_a.requests
    [rb] = mock_b.requests
    assert ra.body == expected_body(body, "rate-a")
    assert rb.body == expected_body(body, "rate-b-longer")
    check_clean(ra, "a")
    check_clean(rb, "b")


@pytest.mark.core
def test_5xx_and_resets_fail_over_and_the_client_sees_one_clean_answer(router, mock_a, mock_b):
    for model, failure in (("down", 503), ("reset", RESET)):
        mock_a.clear()
        mock_b.clear()
        mock_a.set_response(failure, {"error": "unavailable"}, times=1)
        resp = post(router, chat("Hi", model=model))
        assert resp.status_code == 200, (model, resp.text)
        assert resp.headers["x-llm-router-upstream"] == "b"
        assert resp.headers["x-llm-router-attempts"] == "2"
        assert len(mock_a.requests) == 1 and len(mock_b.requests) == 1


@pytest.mark.core
def test_refused_connection_fails_over(router, mock_a, mock_b):
    resp = post(router, chat("Hi", model="refused"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "a"
    assert resp.headers["x-llm-router-model"] == "refused-a"
    assert resp.headers["x-llm-router-attempts"] == "2"
    [rec] = mock_a.requests
    assert rec.json()["model"] == "refused-a"
    check_clean(rec, "a")


@pytest.mark.core
def test_streaming_request_fails_over_before_the_first_byte(router, mock_a, mock_b):
    mock_a.set_response(500, {"error": "boom"}, times=1)
    body = chat("Stream me a story", model="stream", stream=True)
    with httpx.stream("POST", router.url + CHAT, content=jdump(body),
                      headers={"content-type": "application/json"}, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-llm-router-upstream"] == "b"
        assert resp.headers["x-llm-router-attempts"] == "2"
        data = b"".join(resp.iter_bytes())
    events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all(json.loads(e)["model"] == "stream-b-longer" for e in events[:-1])
    assert mock_b.requests[0].json()["stream"] is True


def test_no_fallbacks_when_the_client_says_so(router, mock_a, mock_b):
    mock_a.set_response(429, {"error": {"message": "slow down"}}, times=1)
    body = chat("Hi", model="nofb", provider={"allow_fallbacks": False})
    resp = post(router, body)
    assert resp.status_code == 429
    assert resp.headers["x-llm-router-upstream"] == "a"
    assert "x-llm-router-attempts" not in resp.headers
    assert mock_b.requests == []
    [rec] = mock_a.requests
    assert "provider" not in rec.json()


@pytest.mark.core
def test_when_every_attempt_fails_the_client_gets_the_last_answer(router, mock_a, mock_b):
    mock_a.set_response(503, {"error": "a down"}, times=1)
    mock_b.set_response(502, {"error": "b down"}, times=1)
    resp = post(router, chat("Hi", model="allbad"))
    assert resp.status_code == 502
    assert resp.json() == {"error": "b down"}
    assert resp.headers["x-llm-router-upstream"] == "b"
    assert resp.headers["x-llm-router-attempts"] == "2"


def test_attempts_are_capped_by_max_attempts(router, mock_a, mock_b):
    mock_a.set_response(503, {"error": "down"})
    mock_b.set_response(503, {"error": "down"})
    resp = post(router, chat("Hi", model="three"))
    assert resp.status_code == 503
    assert resp.headers["x-llm-router-attempts"] == "2"
    # Two of the three candidates were tried: three-a, then three-b-longer.
    assert [r.json()["model"] for r in mock_a.requests] == ["three-a"]
    assert [r.json()["model"] for r in mock_b.requests] == ["three-b-longer"]


def test_failed_attempts_cool_the_target_down(router, mock_a, mock_b):
    """Each failed attempt counts on the shared board: after allowed_fails + 1 of them the
    target is skipped before any attempt (requests from all four workers add up)."""
    mock_a.set_response(503, {"error": "down"})
    for _ in range(ALLOWED_FAILS + 1):
        resp = post(router, chat("Hi", model="cool"))
        assert resp.status_code == 200 and resp.headers["x-llm-router-attempts"] == "2"
    assert len(mock_a.requests) == ALLOWED_FAILS + 1
    mock_a.clear()
    for _ in range(4):
        resp = post(router, chat("Hi", model="cool"))
        assert resp.status_code == 200
        assert resp.headers["x-llm-router-upstream"] == "b"
        # Only one usable candidate left: sent straight to it.
        assert "x-llm-router-attempts" not in resp.headers
    assert mock_a.requests == []


def test_large_body_fails_over_byte_exact(router, mock_a, mock_b):
    mock_a.set_response(429, {"error": {"message": "slow down"}}, times=1)
    body = chat("x" * (1024 * 1024), model="big", user="über ✓")
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    [rb] = mock_b.requests
    assert rb.body == expected_body(body, "big-b-longer")
    check_clean(rb, "b")


@pytest.mark.core
def test_client_cannot_steer_the_failover(router, mock_a, mock_b):
    """Internal headers and retry instructions from a client are dropped."""
    mock_a.set_response(503, {"error": "down"}, times=1)
    spoofed = {
        "x-llm-router-failover": "0;llm_router.h.c/refused-c",
        "x-llm-router-path": "/admin",
        "x-envoy-max-retries": "9",
        "x-envoy-retry-on": "5xx",
    }
    resp = post(router, chat("Hi", model="spoof"), headers=spoofed)
    assert resp.status_code == 200
    assert resp.headers["x-llm-router-upstream"] == "b"
    assert resp.headers["x-llm-router-attempts"] == "2"
    [rb] = mock_b.requests
    check_clean(rb, "b")
    # On a route without failover, a client's retry request is not honoured either.
    mock_a.set_response(503, {"error": "down"}, times=1)
    resp = post(router, chat("Hi", model="spoof", provider={"only": ["a"]}), headers=spoofed)
    assert resp.status_code == 503
    assert len(mock_a.requests) == 2


def test_no_client_request_fails_while_a_healthy_candidate_exists(start_router, _mock_a, _mock_b):
    """Sustained traffic over four workers, plain and streamed, while the first target
    fails in every way in turn (503 for a while, 429 with Retry-After, resets, refused
    connections): every client request still gets a 200 from the healthy candidate."""
    from concurrent.futures import ThreadPoolExecutor

    config = {
        "upstreams": {
            "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
            "b": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
            "c": {"cluster": "mock-c"},
        },
        "models": {
            "m": {"targets": [{"upstream": "a", "model": "m-a"}, {"upstream": "b", "model": "m-b"}]},
            "dead": {"targets": [{"upstream": "c", "model": "dead-c"}, {"upstream": "b", "model": "dead-b"}]},
        },
        # Short cooldowns so that the failing target keeps coming back through its probe.
        "health": {"allowed_fails": 1, "cooldown_seconds": 0.3, "failure_rate": None},
        "failover": {"cluster": "llm_failover"},
    }
    router = start_router(mock_a=_mock_a, mock_b=_mock_b, extra_clusters={"mock-c": closed_port()},
                          plugin_config=config, concurrency=4, name="failover-load")
    _mock_a.clear()
    _mock_b.clear()

    def one(i: int) -> tuple[int, str]:
        model = "dead" if i % 7 == 0 else "m"
        body = chat("Request %d" % i, model=model, stream=(i % 3 == 0))
        with httpx.Client(timeout=10) as client:
            resp = client.post(router.url + CHAT, content=jdump(body),
                               headers={"content-type": "application/json"})
            text = resp.text
        ok_stream = not body["stream"] or text.rstrip().endswith("data: [DONE]")
        return resp.status_code if ok_stream else -1, resp.headers.get("x-llm-router-upstream", "?")

    results = []
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for fault in (
                lambda: _mock_a.set_response(503, {"error": "down"}, times=15),
                lambda: _mock_a.set_response(429, {"error": "slow"}, headers={"retry-after": "1"}, times=10),
                lambda: _mock_a.set_response(RESET, times=15),
                lambda: None,
            ):
                fault()
                results += list(pool.map(one, range(len(results), len(results) + 40)))
    finally:
        _mock_a.reset_response()
    statuses = [s for s, _ in results]
    assert statuses == [200] * len(results), [r for r in results if r[0] != 200]
    served = {u for _, u in results}
    assert served <= {"a", "b"} and "b" in served
    # The failing target was tried (and skipped while cooling down), not abandoned for good.
    assert len(_mock_a.requests) > 0
