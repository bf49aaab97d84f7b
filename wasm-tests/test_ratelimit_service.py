"""llm-router-ratelimit on its own, over real gRPC (no Envoy): Limitador's semantics with
counters in a real Redis (ratelimit_service.py)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from ratelimit_service import (GRPC_OK, GRPC_UNAVAILABLE, OK, OVER_LIMIT, SHOULD, UNKNOWN,
                               RateLimitService, RedisServer, check_rate_limit, decode_response,
                               encode_request, grpc_concurrent, report, should_rate_limit)

NS = "llm-router"
RPM = [("limit", "client_rpm"), ("client", "team-a")]
LIMITS = [
    {"namespace": NS, "name": "client team-a rpm", "max_value": 20, "seconds": 60,
     "conditions": ["descriptors[0].limit == 'client_rpm'", "descriptors[0].client == 'team-a'"],
     "variables": []},
    {"namespace": NS, "name": "client team-a budget", "max_value": 1000, "seconds": 2764800,
     "conditions": ["descriptors[0].limit == 'client_budget'",
                    "descriptors[0].client == 'team-a'"],
     "variables": ["descriptors[0].month"]},
]


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as r:
        yield r


@pytest.fixture
def rls(redis):
    redis.flushall()
    with RateLimitService(LIMITS, redis_url=redis.url) as s:
        yield s


def codes(port, n, descriptor=RPM, hits=0):
    out = []
    for _ in range(n):
        status, resp, msg = should_rate_limit(port, NS, [descriptor], hits)
        assert status == GRPC_OK, msg
        out.append(resp["code"])
    return out


def test_twenty_of_thirty_then_over_limit(rls):
    assert codes(rls.port, 30) == [OK] * 20 + [OVER_LIMIT] * 10
    # Another client has no limit; an empty domain is UNKNOWN (limitador-server's answer).
    assert codes(rls.port, 3, [("limit", "client_rpm"), ("client", "team-b")]) == [OK] * 3
    status, resp, _ = should_rate_limit(rls.port, "", [RPM])
    assert (status, resp["code"]) == (GRPC_OK, UNKNOWN)


def test_exact_under_concurrency(rls):
    # 100 calls at once (4 connections of 25 streams), max 20: exactly 20 admitted, thanks to
    # the service's lock (limitador's Redis storage alone admits more).
    msg = encode_request(NS, [RPM])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: grpc_concurrent(rls.port, SHOULD, [msg] * 25), range(4)))
    flat = [decode_response(body)["code"] for chunk in got for status, body, _ in chunk]
    assert (flat.count(OK), flat.count(OVER_LIMIT)) == (20, 80)


def test_statuses_say_what_remains(rls):
    _, resp, _ = should_rate_limit(rls.port, NS, [RPM], hits=5)
    assert resp["code"] == OK
    [st] = resp["statuses"]
    assert st["code"] == OK and st["remaining"] == 15 and 0 < st["reset_s"] <= 60, st


def test_report_adds_beyond_the_limit(rls):
    for _ in range(3):
        status, resp, msg = report(rls.port, NS, [RPM], hits=10)
        assert (status, resp["code"]) == (GRPC_OK, OK), msg
    status, resp, _ = check_rate_limit(rls.port, NS, [RPM])
    assert resp["code"] == OVER_LIMIT
    assert codes(rls.port, 1) == [OVER_LIMIT]


def test_month_separates_budget_counters(rls):
    may = [("limit", "client_budget"), ("client", "team-a"), ("month", "2026-05")]
    june = [("limit", "client_budget"), ("client", "team-a"), ("month", "2026-06")]
    assert codes(rls.port, 2, may, hits=600) == [OK, OVER_LIMIT]
    assert codes(rls.port, 1, june, hits=1000) == [OK]


def test_counters_survive_a_restart(rls):
    assert codes(rls.port, 15) == [OK] * 15
    port = rls.port
    rls.restart()
    assert rls.port == port
    assert codes(rls.port, 6) == [OK] * 5 + [OVER_LIMIT]


def test_redis_down_is_unavailable_not_a_hang(redis, rls):
    assert codes(rls.port, 1) == [OK]
    redis.stop()
    try:
        for _ in range(2):  # the first finds the connection gone, the second a failed reconnect
            start = time.monotonic()
            status, _, msg = should_rate_limit(rls.port, NS, [RPM], timeout=10.0)
            assert status == GRPC_UNAVAILABLE, (status, msg)
            assert time.monotonic() - start < 2.0
        status, _, _ = report(rls.port, NS, [RPM], timeout=10.0)
        assert status == GRPC_UNAVAILABLE
    finally:
        redis.start(redis.port)
    # Redis is back (empty): the service reconnects by itself (the first call may still fail).
    deadline = time.monotonic() + 5.0
    while should_rate_limit(rls.port, NS, [RPM])[0] != GRPC_OK:
        assert time.monotonic() < deadline, "no reconnection to Redis"
        time.sleep(0.1)
    assert codes(rls.port, 20) == [OK] * 19 + [OVER_LIMIT]


def test_delay_delays_every_answer(redis):
    with RateLimitService(LIMITS, redis_url=redis.url, delay_ms=300) as slow:
        start = time.monotonic()
        status, resp, _ = should_rate_limit(slow.port, NS, [[("limit", "none")]])
        assert (status, resp["code"]) == (GRPC_OK, OK)
        assert time.monotonic() - start >= 0.3


def test_in_memory_without_redis():
    with RateLimitService(LIMITS) as mem:
        assert codes(mem.port, 21) == [OK] * 20 + [OVER_LIMIT]
