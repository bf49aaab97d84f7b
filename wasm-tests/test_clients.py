"""End-to-end tests of client API keys and per-client limits (issue 5), through the real Envoy
on four worker threads, in front of the loopback mock providers.

* 401 without a key / with an unknown key (every path through the filter: routed endpoints,
  ``GET /v1/models``, passed-through paths), answered before the body is read; anonymous
  requests with ``required: false``.
* 403 for models a key may not use (explicit model, alias, ``auto`` narrowed to the allowed
  targets).
* 429 over rpm / tpm / monthly budget with ``retry-after`` and ``x-ratelimit-*``; the limits are
  shared by all workers (100 concurrent requests against rpm 20: exactly 20 pass) and a full
  window recovers when Retry-After says.
* ``identity_header``: the client named by a trusted header.
* The key never reaches a provider, the access log, the stats or Envoy's log.
* ``profile``: the client's default strategy; ``match.clients`` / ``match.profile`` in rules.

Keys are random per run; the configuration holds only their SHA-256 (``key_sha256``). Each
test uses its own client(s), so that their limits do not interact. The one slow test (the
window recovery, up to a minute) fills its window when the module's Envoy starts and is the
last test of the module, so that the other tests run while it waits.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import re
import secrets
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness import (STATS_AT_ROOT, STATS_AT_ROOT_WHY, EnvoyRouter, RawResponse, assert_openai_error, chat,
                     dechunk, jdump, raw_http, validate)

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY: the providers' own key
CHAT = "/v1/chat/completions"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")
STAT = "wasmcustom.llm_router.client."
UNAUTHORIZED_STAT = "wasmcustom.llm_router.clients.unauthorized"
RESET_RE = re.compile(r"^(\d+m)?\d+(\.\d+)?s$")  # "12s", "1m0s"

PRICE_HI = {"input": 10.0, "output": 30.0}  # per 1M tokens
PRICE_LO = {"input": 0.1, "output": 0.3}
PRICE_BIG = {"input": 1000.0, "output": 1000.0}  # 1000 micro-units per token


def new_key(name: str) -> str:
    return "sk-test-%s-%s" % (name, secrets.token_hex(12))


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


#: Clients of the module's router, and what each is for (one test each, mostly).
CLIENT_SPECS = {
    "secret": {},  # key secrecy: no limits
    "counted": {},  # per-client stats across workers
    "limited": {"models": ["fast", "gpt-4o-mini*"], "rpm": 3},  # 403s; they do not count
    "auto-b": {"models": ["b/*"]},  # auto narrowed by upstream/model
    "auto-id": {"models": ["budget-?"]},  # auto narrowed by model id
    "rpm2": {"rpm": 2},  # 429 requests and the x-ratelimit headers
    "burst-threads": {"rpm": 20},  # 100 concurrent requests (two ways)
    "burst-raw": {"rpm": 20},
    "slow": {"rpm": 1},  # window recovery (the last test)
    "tok": {"tpm": 100},  # 429 tokens
    "spender": {"monthly_budget": 0.01},  # 429 insufficient_quota
    "cheap": {"profile": "cheapest"},
    "qual": {"profile": "quality"},
    "plain": {},
    "rotating": {"rpm": 2},  # two keys (old and new) sharing one client's limit
}
KEYS = {name: new_key(name) for name in CLIENT_SPECS}
NEW_KEY = new_key("rotating-new")
KEYS["secret"] = "sk-test-SECRET-" + secrets.token_hex(16)  # distinctive: searched for everywhere

UPSTREAMS = {
    "a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    "b": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
}

CONFIG = {
    "upstreams": UPSTREAMS,
    "models": {
        "fast": {"targets": [{"upstream": "a", "model": "fast-a"}]},
        "smart": {"targets": [{"upstream": "b", "model": "smart-b"}]},
        "priced": {"targets": [{"upstream": "a", "model": "priced-a", "price": PRICE_BIG}]},
    },
    # auto: two priced targets, the expensive one first (priority order: a).
    "default": {"targets": [{"upstream": "a", "model": "premium-a", "price": PRICE_HI},
                            {"upstream": "b", "model": "budget-b", "price": PRICE_LO}]},
    "unknown_model": "passthrough",
    "passthrough_upstream": "b",
    "clients": {
        "required": True,
        # Hashes may be written in either case ("plain": upper case).
        "keys": [dict(name=name, key_sha256=sha(KEYS[name]).upper() if name == "plain" else sha(KEYS[name]),
                      **spec) for name, spec in CLIENT_SPECS.items()],
    },
}
# While rotating, a client lists the hashes of its old and new keys.
next(k for k in CONFIG["clients"]["keys"] if k["name"] == "rotating")["key_sha256"] = [
    sha(KEYS["rotating"]), sha(NEW_KEY)]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def bearer(key: str) -> dict:
    return {"authorization": "Bearer " + key}


def auth(name: str) -> dict:
    return bearer(KEYS[name])


def rid() -> str:
    return "clients-" + uuid.uuid4().hex[:12]


def post(r: EnvoyRouter, body, headers=None, path: str = CHAT) -> httpx.Response:
    """One request on a new connection (so on any of the workers)."""
    if isinstance(body, (bytes, str)):
        return httpx.post(r.url + path, content=body, headers=dict({"content-type": "application/json"},
                                                                    **(headers or {})), timeout=15)
    return httpx.post(r.url + path, json=body, headers=headers or {}, timeout=15)


def get(r: EnvoyRouter, path: str, headers=None) -> httpx.Response:
    return httpx.get(r.url + path, headers=headers or {}, timeout=15)


def served_by(resp: httpx.Response) -> str:
    return resp.headers.get("x-llm-router-upstream", "?")


def completion_body(model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """A non-streaming chat answer reporting this usage."""
    return {"id": "chatcmpl-fixed", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def assert_401(resp: httpx.Response, code: str, secret: str | None = None) -> dict:
    err = assert_openai_error(resp, 401, code, None, "invalid_request_error")
    assert (resp.headers.get("www-authenticate") or "").startswith("Bearer"), resp.headers
    if secret is not None:
        assert secret not in resp.text and secret not in str(resp.headers)
    return err


def assert_429(resp: httpx.Response, kind: str, code: str = "rate_limit_exceeded") -> int:
    """The router's own 429 of this type; returns its Retry-After (seconds)."""
    assert_openai_error(resp, 429, code, None, kind)
    ra = resp.headers.get("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, resp.headers
    return int(ra)


def ratelimit_headers(resp: httpx.Response) -> dict:
    return {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("x-ratelimit-")}


def assert_ratelimit(resp: httpx.Response, what: str, limit: int, remaining: int | None = None) -> None:
    """``x-ratelimit-{limit,remaining,reset}-<what>`` with the key's figures (one value each)."""
    h = ratelimit_headers(resp)
    assert h.get("x-ratelimit-limit-" + what) == str(limit), h
    rem = h.get("x-ratelimit-remaining-" + what)
    assert rem is not None and rem.isdigit() and 0 <= int(rem) <= limit, h
    if remaining is not None:
        assert int(rem) == remaining, h
    reset = h.get("x-ratelimit-reset-" + what)
    assert reset is not None and RESET_RE.match(reset), h


def upstream_requests(*mocks) -> list:
    return [req for m in mocks for req in m.requests]


def client_stats(r: EnvoyRouter, name: str) -> dict:
    """``{stat: value}`` of ``llm_router.client.<name>.*`` (used ones only)."""
    prefix = STAT + name + "."
    return {k[len(prefix):]: v for k, v in r.counters(prefix).items()}


def wait_stats(r: EnvoyRouter, name: str, timeout: float = 5.0, **want: int) -> dict:
    """The client's stats once each stat in ``want`` has that value (absent counts as 0);
    fails with what there was after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        stats = client_stats(r, name)
        if all(stats.get(k, 0) == v for k, v in want.items()):
            return stats
        assert time.monotonic() < deadline, (name, want, stats)
        time.sleep(0.1)


def unauthorized(r: EnvoyRouter) -> int:
    return r.counters(UNAUTHORIZED_STAT).get(UNAUTHORIZED_STAT, 0)


def log_lines(r: EnvoyRouter, request_ids: list[str], timeout: float = 5.0) -> list[dict]:
    """The access-log lines of these requests (by ``x-request-id``), in that order."""
    deadline = time.monotonic() + timeout
    while True:
        by_id = {line.get("request_id"): line for line in r.access_log(0, timeout=0)}
        missing = [i for i in request_ids if i not in by_id]
        if not missing:
            return [by_id[i] for i in request_ids]
        assert time.monotonic() < deadline, "no access-log line for %s" % missing
        time.sleep(0.1)


def burst(r: EnvoyRouter, n: int, body: dict, headers: dict) -> list[httpx.Response]:
    """``n`` requests at once, each on its own connection, released together by a barrier."""
    clients = [httpx.Client(timeout=30) for _ in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return clients[i].post(r.url + CHAT, json=body, headers=headers)

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def burst_raw(r: EnvoyRouter, n: int, body: dict, headers: dict) -> list[httpx.Response]:
    """``n`` requests as close together as possible: ``n`` connections opened (and accepted
    by the workers) first, then every request written in one tight loop, then the answers
    read."""
    data = jdump(body)
    head = "".join("%s: %s\r\n" % kv for kv in headers.items())
    request = (b"POST %s HTTP/1.1\r\nHost: llm\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
               % (CHAT.encode(), len(data), head.encode(), data))
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        time.sleep(0.3)  # every connection accepted by some worker
        for s in socks:
            s.sendall(request)
        out = []
        for s in socks:
            chunks = []
            while True:
                got = s.recv(65536)
                if not got:
                    break
                chunks.append(got)
            out.append(parse_response(b"".join(chunks)))
        return out
    finally:
        for s in socks:
            s.close()


def parse_response(data: bytes) -> httpx.Response:
    """An HTTP/1.1 response read off a socket (closed after it), as an httpx.Response."""
    sep = data.find(b"\r\n\r\n")
    assert sep >= 0, "no complete response head: %r" % data[:300]
    lines = data[:sep].decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    raw = RawResponse(int(lines[0].split(" ")[1]), headers, data[sep + 4:])
    if (raw.header("transfer-encoding") or "").lower() == "chunked":
        raw.content = dechunk(raw.content)
        headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
    return httpx.Response(raw.status_code, headers=headers, content=raw.content)


def seconds_to_month_end(now: float) -> float:
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) - now


# ---------------------------------------------------------------------------
# The module's router; the "slow" client's window is filled as soon as it runs
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG,
                     env={"MOCK_API_KEY": MOCK_KEY}, concurrency=4, name="clients") as r:
        yield r


@pytest.fixture(scope="module")
def filled_window(router):
    """Client ``slow`` (rpm 1) used up its minute: (monotonic time of the 429, Retry-After)."""
    first = post(router, chat("Hi", model="fast"), auth("slow"))
    assert first.status_code == 200, first.text
    assert_ratelimit(first, "requests", 1, 0)
    second = post(router, chat("Hi", model="fast"), auth("slow"))
    at = time.monotonic()
    retry_after = assert_429(second, "requests")
    assert_ratelimit(second, "requests", 1, 0)
    return at, retry_after


@pytest.fixture(autouse=True, scope="module")
def _fill_first(request):
    """Fills the window at the start of the module (when the recovery test is selected), so
    that its wait overlaps the other tests."""
    if any(item.name == "test_window_recovers_after_retry_after" for item in request.session.items):
        request.getfixturevalue("filled_window")


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_bad_client_configurations_are_refused_naming_the_field():
    """(The module's router loading CONFIG, with one upper-case hash, is the good case.)"""
    def bad(index: int, field: str, value) -> dict:
        keys = [{"name": "one", "key_sha256": sha("k1"), "rpm": 5},
                {"name": "two", "key_sha256": sha("k2")}]
        keys[index][field] = value
        return {"upstreams": {"a": {"cluster": "mock-a"}},
                "default": {"targets": [{"upstream": "a", "model": "m"}]},
                "clients": {"keys": keys}}

    cases = {  # two, run side by side: each validation compiles the module (seconds of CPU)
        "clients.keys[1].key_sha256": bad(1, "key_sha256", "xyz"),
        "clients.keys[0].rpm": bad(0, "rpm", 0),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(validate, cases.values())))
    for field, (ok, out) in results.items():
        assert not ok, (field, out[-2000:])
        lines = [ln for ln in out.splitlines() if "invalid plugin configuration:" in ln]
        assert lines and field in lines[0], (field, out[-2000:])


# ---------------------------------------------------------------------------
# 401
# ---------------------------------------------------------------------------


def test_missing_and_unknown_keys_get_401_and_reach_nothing(router, mock_a, mock_b):
    before = unauthorized(router)
    wrong = "sk-test-unknown-" + secrets.token_hex(12)
    requests = [
        ("chat", lambda h: post(router, chat("Hi", model="fast"), h)),
        ("chat-auto", lambda h: post(router, chat("Hi"), h)),
        ("models", lambda h: get(router, "/v1/models", h)),
        ("model", lambda h: get(router, "/v1/models/fast", h)),
        ("passthrough", lambda h: get(router, "/v1/files", h)),
        ("passthrough-post", lambda h: post(router, {"purpose": "x"}, h, path="/v1/uploads")),
        # 401 (headers) comes before 400 (body).
        ("bad-json", lambda h: post(router, b"{not json", h)),
    ]
    sent = 0
    for what, send in requests:
        assert_401(send({}), "missing_api_key")
        for header in ({"authorization": "Bearer " + wrong}, {"x-api-key": wrong}, {"api-key": wrong}):
            err = assert_401(send(header), "invalid_api_key", wrong)
            assert wrong not in err["message"], (what, err)
        sent += 4
    # A known key's hash is not a key.
    assert_401(post(router, chat("Hi", model="fast"), bearer(sha(KEYS["plain"]))), "invalid_api_key")
    sent += 1
    assert upstream_requests(mock_a, mock_b) == []
    deadline = time.monotonic() + 5
    while unauthorized(router) - before != sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert unauthorized(router) - before == sent
    # The same requests with a known key pass.
    assert post(router, chat("Hi", model="fast"), auth("plain")).status_code == 200
    assert get(router, "/v1/models", auth("plain")).status_code == 200
    assert get(router, "/v1/files", auth("plain")).status_code == 200
    assert len(upstream_requests(mock_a, mock_b)) == 2


@pytest.mark.core
def test_401_is_answered_before_the_body_is_read(router, mock_a, mock_b):
    """Headers promise a body that never comes: the 401 must not wait for it."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: llm\r\ncontent-type: application/json\r\n"
            b"content-length: 200\r\nconnection: close\r\n\r\n")
    started = time.monotonic()
    resp = raw_http(router.port, head, timeout=4)
    assert resp.status_code == 401, resp.content
    assert resp.json()["error"]["code"] == "missing_api_key"
    assert time.monotonic() - started < 4
    assert upstream_requests(mock_a, mock_b) == []


def test_not_required_serves_missing_and_unknown_keys_anonymously(start_router, mock_a, mock_b):
    known = new_key("known")
    config = dict(CONFIG, clients={"required": False, "keys": [
        {"name": "known", "key_sha256": sha(known), "rpm": 1, "models": ["fast"]}]})
    r = start_router(mock_a=mock_a, mock_b=mock_b, plugin_config=config, concurrency=4,
                     name="clients-optional")
    unknown = "sk-test-anon-" + secrets.token_hex(12)
    ids = [rid() for _ in range(3)]
    # Anonymous: any model, no limits (more requests than the known key's rpm).
    for i, headers in enumerate(({}, bearer(unknown), {"x-api-key": unknown})):
        resp = post(r, chat("Hi", model="smart"), dict(headers, **{"x-request-id": ids[i]}))
        assert resp.status_code == 200, resp.text
        assert served_by(resp) == "b"
        assert not ratelimit_headers(resp), resp.headers
    assert get(r, "/v1/models").status_code == 200
    assert get(r, "/v1/models", bearer(unknown)).status_code == 200
    for req in mock_b.requests:
        assert unknown not in str(req.headers) and unknown not in req.text
        assert req.header_all("authorization") == ["Bearer " + MOCK_KEY], req.headers
        assert req.header("x-api-key") is None and req.header("api-key") is None
    anon, anon_key, anon_x = log_lines(r, ids)
    assert "client" not in anon or anon["client"] is None, anon
    assert anon_key.get("client_key_id") == sha(unknown)[:16], anon_key
    assert "client" not in anon_key or anon_key["client"] is None, anon_key
    assert anon_x.get("client_key_id") == sha(unknown)[:16], anon_x

    # A known key keeps its limits and models.
    ok = post(r, chat("Hi", model="fast"), bearer(known))
    assert ok.status_code == 200, ok.text
    assert_ratelimit(ok, "requests", 1, 0)
    assert_openai_error(post(r, chat("Hi", model="smart"), bearer(known)), 403, "model_not_allowed",
                        "model", "permission_error")
    assert_429(post(r, chat("Hi", model="fast"), bearer(known)), "requests")
    assert post(r, chat("Hi", model="fast")).status_code == 200, "anonymous again: no limit"


# ---------------------------------------------------------------------------
# 403
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_models_endpoint_lists_only_what_the_client_may_ask_for(router, mock_a, mock_b):
    every = get(router, "/v1/models", auth("plain"))
    assert every.status_code == 200, every.text
    assert [m["id"] for m in every.json()["data"]] == ["auto", "fast", "priced", "smart"]
    narrow = get(router, "/v1/models", auth("limited"))  # models ["fast", "gpt-4o-mini*"]
    assert narrow.status_code == 200, narrow.text
    assert [m["id"] for m in narrow.json()["data"]] == ["auto", "fast"]
    assert get(router, "/v1/models/fast", auth("limited")).json()["id"] == "fast"
    assert_openai_error(get(router, "/v1/models/smart", auth("limited")), 404, "model_not_found", "model")
    assert get(router, "/v1/models/smart", auth("plain")).json()["id"] == "smart"
    assert upstream_requests(mock_a, mock_b) == []


@pytest.mark.core
@pytest.mark.envoy_since(STATS_AT_ROOT, STATS_AT_ROOT_WHY)
def test_models_outside_the_keys_list_get_403_and_do_not_count(router, mock_a, mock_b):
    """``limited``: models ["fast", "gpt-4o-mini*"], rpm 3."""
    key = auth("limited")
    forbidden = [chat("Hi", model="smart"),  # an alias
                 chat("Hi", model="priced"),
                 chat("Hi", model="gpt-4o"),  # would pass through, but is not allowed
                 chat("Hi", model="fast-a"),  # a target's model id is not the alias
                 chat("Hi"),  # auto: neither default target matches the list
                 chat("Hi", model=None)]
    for body in forbidden:
        err = assert_openai_error(post(router, body, key), 403, "model_not_allowed", "model",
                                  "permission_error")
        assert KEYS["limited"] not in err["message"]
    # A body error: 400, not counted either.
    assert_openai_error(post(router, b"{nope", key), 400, "invalid_json")
    assert upstream_requests(mock_a, mock_b) == []

    # rpm 3: neither the 403s nor the 400 used any of it.
    fast = post(router, chat("Hi", model="fast"), key)
    assert (fast.status_code, served_by(fast)) == (200, "a"), fast.text
    assert_ratelimit(fast, "requests", 3, 2)
    glob = post(router, chat("Hi", model="gpt-4o-mini-2024-07-18"), key)
    assert (glob.status_code, served_by(glob)) == (200, "b"), glob.text
    assert mock_b.requests[-1].json()["model"] == "gpt-4o-mini-2024-07-18"
    assert post(router, chat("Hi", model="gpt-4o-mini"), key).status_code == 200
    assert_429(post(router, chat("Hi", model="fast"), key), "requests")
    assert len(upstream_requests(mock_a, mock_b)) == 3
    wait_stats(router, "limited", forbidden=len(forbidden))


@pytest.mark.core
def test_auto_only_considers_the_allowed_targets(router, mock_a, mock_b):
    # Without restriction, auto goes to the first default target (a/premium-a).
    resp = post(router, chat("Hi"), auth("plain"))
    assert (resp.status_code, served_by(resp)) == (200, "a"), resp.text
    for name in ("auto-b", "auto-id"):  # "b/*" and "budget-?"
        for body in (chat("Hi"), chat("Hi", model=None)):
            resp = post(router, body, auth(name))
            assert resp.status_code == 200, (name, resp.text)
            assert (served_by(resp), resp.headers.get("x-llm-router-model")) == ("b", "budget-b"), name
        # Explicit models are checked by name.
        assert_openai_error(post(router, chat("Hi", model="fast"), auth(name)), 403,
                            "model_not_allowed", "model", "permission_error")
    assert [req.json()["model"] for req in mock_b.requests] == ["budget-b"] * 4
    assert [req.json()["model"] for req in mock_a.requests] == ["premium-a"]


# ---------------------------------------------------------------------------
# 429
# ---------------------------------------------------------------------------


def test_rpm_429_with_retry_after_and_ratelimit_headers(router, mock_a, mock_b):
    before = client_stats(router, "rpm2").get("rate_limited", 0)
    # The provider's own rate-limit headers give way to the key's.
    mock_a.set_response(200, completion_body("fast-a", 10, 2), times=1, headers={
        "x-ratelimit-limit-requests": "9999", "x-ratelimit-remaining-requests": "9998",
        "x-ratelimit-limit-tokens": "500000", "x-ratelimit-remaining-tokens": "499000"})
    first = post(router, chat("Hi", model="fast"), auth("rpm2"))
    assert first.status_code == 200, first.text
    assert_ratelimit(first, "requests", 2, 1)
    assert set(ratelimit_headers(first)) == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                                             "x-ratelimit-reset-requests"}, first.headers
    second = post(router, chat("Hi", model="fast"), auth("rpm2"))
    assert second.status_code == 200, second.text
    assert_ratelimit(second, "requests", 2, 0)

    ids = [rid() for _ in range(2)]
    for request_id in ids:
        third = post(router, chat("Hi", model="fast"), dict(auth("rpm2"), **{"x-request-id": request_id}))
        retry_after = assert_429(third, "requests")
        assert 1 <= retry_after <= 60, retry_after
        assert_ratelimit(third, "requests", 2, 0)
        reset = ratelimit_headers(third)["x-ratelimit-reset-requests"]
        m = RESET_RE.match(reset)
        secs = int(m.group(1)[:-1]) * 60 if m.group(1) else 0
        secs += float(reset[len(m.group(1) or ""):-1])
        assert abs(secs - retry_after) <= 1.5, (reset, retry_after)
        assert "x-ratelimit-limit-tokens" not in ratelimit_headers(third)
    # Other models are limited alike: the limit is the key's.
    assert_429(post(router, chat("Hi", model="smart"), auth("rpm2")), "requests")
    assert len(upstream_requests(mock_a, mock_b)) == 2
    wait_stats(router, "rpm2", rate_limited=before + 3)
    for line in log_lines(router, ids):
        assert line["status"] == 429 and line.get("client") == "rpm2", line
        assert line.get("client_key_id") is None, line  # absent or null: the client is known


def test_a_rotating_clients_keys_share_its_limit(router, mock_a, mock_b):
    old = post(router, chat("Hi", model="fast"), auth("rotating"))
    assert old.status_code == 200, old.text
    assert_ratelimit(old, "requests", 2, 1)
    new = post(router, chat("Hi", model="fast"), bearer(NEW_KEY))
    assert new.status_code == 200, new.text
    assert_ratelimit(new, "requests", 2, 0)
    for key in (KEYS["rotating"], NEW_KEY):
        assert_429(post(router, chat("Hi", model="fast"), bearer(key)), "requests")
    assert len(upstream_requests(mock_a, mock_b)) == 2


def worker_connections(r: EnvoyRouter) -> dict:
    """Connections accepted so far by each worker of the router's listener."""
    return {k.split(".worker_")[1].split(".")[0]: v for k, v in r.counters("listener.127.0.0.1_").items()
            if ".worker_" in k and k.endswith(".downstream_cx_total")}


@pytest.mark.parametrize("how", ["threads", "raw"])
def test_100_concurrent_requests_against_rpm_20(router, mock_a, mock_b, how):
    """threads: 100 httpx clients released by a barrier; raw: 100 connections opened first,
    then all requests written in one loop (closest together)."""
    name = "burst-" + how
    before = worker_connections(router)
    responses = (burst if how == "threads" else burst_raw)(router, 100, chat("Hi", model="fast"), auth(name))
    after = worker_connections(router)
    spread = {w: n - before.get(w, 0) for w, n in after.items() if n - before.get(w, 0) > 0}
    assert len(spread) >= 2 and sum(spread.values()) >= 100, (before, after)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20, sorted(statuses)
    assert statuses.count(429) == 80, sorted(statuses)
    for resp in responses:
        if resp.status_code == 200:
            assert served_by(resp) == "a"
            assert_ratelimit(resp, "requests", 20)
            assert int(resp.headers["x-ratelimit-remaining-requests"]) < 20
        else:
            assert_429(resp, "requests")
            assert_ratelimit(resp, "requests", 20, 0)
    time.sleep(0.3)
    assert len(mock_a.requests) == 20 and mock_b.requests == []
    stats = wait_stats(router, name, rate_limited=80)
    # `requests` counts the requests the client had routed.
    assert stats.get("requests") == 20, stats


def test_tpm_limit_counts_the_reported_usage(router, mock_a, mock_b):
    """``tok``: tpm 100; each answer reports 60 tokens: two pass, then 429 tokens."""
    mock_a.set_response(200, completion_body("fast-a", 50, 10))
    first = post(router, chat("Hi", model="fast"), auth("tok"))
    assert first.status_code == 200, first.text
    assert_ratelimit(first, "tokens", 100)
    assert not any(k.endswith("-requests") for k in ratelimit_headers(first)), first.headers
    time.sleep(0.3)  # the usage is counted when the first request ends
    second = post(router, chat("Hi", model="fast"), auth("tok"))
    assert second.status_code == 200, second.text
    time.sleep(0.3)
    third = post(router, chat("Hi", model="fast"), auth("tok"))
    retry_after = assert_429(third, "tokens")
    assert 1 <= retry_after <= 60
    assert_ratelimit(third, "tokens", 100, 0)
    assert not any(k.endswith("-requests") for k in ratelimit_headers(third)), third.headers
    assert len(mock_a.requests) == 2
    wait_stats(router, "tok", prompt_tokens=100, completion_tokens=20, rate_limited=1)


def test_monthly_budget_spent_gives_429_insufficient_quota(router, mock_a, mock_b):
    """``spender``: budget 0.01; priced-a costs 0.001 per token, unpriced targets nothing."""
    for _ in range(3):
        resp = post(router, chat("Hi", model="fast"), auth("spender"))
        assert resp.status_code == 200, resp.text
    mock_a.set_response(200, completion_body("priced-a", 10, 10), times=1)  # 20 tokens: 0.02
    resp = post(router, chat("Hi", model="priced"), auth("spender"))
    assert resp.status_code == 200, resp.text
    time.sleep(0.3)  # the cost is added when the request ends
    for model in ("priced", "fast", "auto"):
        refused = post(router, chat("Hi", model=model), auth("spender"))
        now = time.time()
        retry_after = assert_429(refused, "insufficient_quota", "insufficient_quota")
        assert abs(retry_after - seconds_to_month_end(now)) <= 120, (retry_after, seconds_to_month_end(now))
    assert len(mock_a.requests) == 4
    stats = wait_stats(router, "spender", rate_limited=3)
    cost = stats.get("cost_micro")
    assert cost == 20000, stats
    # Other clients are not affected.
    assert post(router, chat("Hi", model="priced"), auth("plain")).status_code == 200


# ---------------------------------------------------------------------------
# Key secrecy and per-client stats
# ---------------------------------------------------------------------------


def test_the_key_reaches_no_provider_log_or_stat(router, mock_a, mock_b):
    key = KEYS["secret"]
    wrong = "sk-test-SECRET-" + secrets.token_hex(16)  # an unknown key
    ids = [rid() for _ in range(5)]
    h = [dict(hdr, **{"x-request-id": i}) for hdr, i in zip(
        (bearer(key), {"x-api-key": key}, {"api-key": key}, bearer(key), bearer(key)), ids)]
    assert post(router, chat("Hi"), h[0]).status_code == 200
    assert post(router, chat("Hi", model="fast"), h[1]).status_code == 200
    assert post(router, chat("Hi", model="some-passthrough-model"), h[2]).status_code == 200
    with httpx.stream("POST", router.url + CHAT, json=chat("Hi", model="fast", stream=True),
                      headers=h[3], timeout=15) as resp:
        assert resp.status_code == 200
        assert "[DONE]" in "".join(resp.iter_text())
    models = get(router, "/v1/models", h[4])
    assert models.status_code == 200 and len(upstream_requests(mock_a, mock_b)) == 4
    passed = get(router, "/v1/files?limit=1", bearer(key))
    assert passed.status_code == 200 and passed.json()["path"] == "/v1/files?limit=1"
    posted = post(router, {"purpose": "x"}, {"x-api-key": key, "api-key": key}, path="/v1/uploads")
    assert posted.status_code == 200
    assert_401(post(router, chat("Hi"), bearer(wrong)), "invalid_api_key", wrong)
    assert_401(post(router, chat("Hi"), bearer(key + "x")), "invalid_api_key", key)

    # What the providers received.
    received = upstream_requests(mock_a, mock_b)
    assert len(received) == 6, [(q.method, q.path) for q in received]
    for req in received:
        for k, v in req.headers:
            assert key not in v and wrong not in v, (req.path, k)
        assert key.encode() not in req.body and wrong.encode() not in req.body
        assert [req.header(n) for n in CREDENTIAL_HEADERS[1:]] == [None, None], req.headers
        if req.path.startswith("/v1/files") or req.path.startswith("/v1/uploads"):
            assert req.header("authorization") is None, req.headers  # passed through: no key at all
        else:
            assert req.header_all("authorization") == ["Bearer " + MOCK_KEY], req.headers

    # The access log: the client's name, never the key.
    for line in log_lines(router, ids):
        assert line.get("client") == "secret", line
        assert line.get("client_key_id") is None, line  # absent or null: the client is known
    with open(router.access_log_path, encoding="utf-8") as f:
        text = f.read()
    assert key not in text and wrong not in text

    # The stats and Envoy's own log.
    for path in ("/stats", "/stats/prometheus", "/stats?format=json"):
        status, body = router.stats_text(path)
        assert status == 200
        assert key not in body and wrong not in body, path
        assert key[:20] not in body
    with open(router.log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    assert key not in log and wrong not in log
    assert "SECRET" not in log
    # Its four routed requests (not /v1/models, not the passed-through paths).
    wait_stats(router, "secret", requests=4)


def test_per_client_stats_add_up_across_workers(router, mock_a, mock_b):
    n = 8
    prompt = completion = 0
    for i in range(n):
        resp = post(router, chat("Say hello number %d" % i, model="priced"), auth("counted"))
        assert resp.status_code == 200, resp.text
        u = resp.json()["usage"]
        prompt, completion = prompt + u["prompt_tokens"], completion + u["completion_tokens"]
    assert len(mock_a.requests) == n

    s = wait_stats(router, "counted", requests=n, prompt_tokens=prompt, completion_tokens=completion,
                   rate_limited=0, forbidden=0)
    cost = s.get("cost_micro")
    assert cost is not None and abs(cost - (prompt + completion) * 1000) <= n, (s, prompt, completion)
    # The bundled stats_tags make the name a label on /stats/prometheus.
    status, prom = router.stats_text("/stats/prometheus")
    assert status == 200
    samples = dict(re.findall(r'^(llm_router_client_[a-z_]+)\{client="counted"\} (\d+)$', prom, re.M))
    assert samples.get("llm_router_client_requests") == str(n), samples
    assert samples.get("llm_router_client_prompt_tokens") == str(prompt), samples


# ---------------------------------------------------------------------------
# Profiles and rules
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_profile_sets_the_default_strategy(router, mock_a, mock_b):
    for _ in range(3):
        cheap = post(router, chat("Hi"), auth("cheap"))
        assert (cheap.status_code, served_by(cheap), cheap.headers.get("x-llm-router-model")) == (
            200, "b", "budget-b"), cheap.text
        for name in ("plain", "qual"):  # configured (priority) order
            resp = post(router, chat("Hi"), auth(name))
            assert (resp.status_code, served_by(resp), resp.headers.get("x-llm-router-model")) == (
                200, "a", "premium-a"), (name, resp.text)
    # The request's own provider.sort wins over the profile.
    resp = post(router, chat("Hi", provider={"sort": "price"}), auth("qual"))
    assert (resp.status_code, served_by(resp)) == (200, "b"), resp.text
    assert len(mock_b.requests) == 4 and len(mock_a.requests) == 6


def test_rules_match_clients_and_profiles(start_router, mock_a, mock_b):
    keys = {n: new_key(n) for n in ("vip-one", "fastlane", "regular")}
    config = {
        "upstreams": UPSTREAMS,
        "models": {"fast": {"targets": [{"upstream": "a", "model": "fast-a"}]},
                   "smart": {"targets": [{"upstream": "b", "model": "smart-b"}]},
                   "lat": {"targets": [{"upstream": "b", "model": "lat-b"}]}},
        "rules": [{"name": "vip", "match": {"clients": ["vip-*"]}, "use_model": "smart"},
                  {"name": "lat", "match": {"profile": ["latency"]}, "use_model": "lat"}],
        "default": {"use_model": "fast"},
        "clients": {"keys": [{"name": "vip-one", "key_sha256": sha(keys["vip-one"])},
                             {"name": "fastlane", "key_sha256": sha(keys["fastlane"]), "profile": "latency"},
                             {"name": "regular", "key_sha256": sha(keys["regular"])}]},
    }
    r = start_router(mock_a=mock_a, mock_b=mock_b, plugin_config=config, concurrency=4, name="clients-rules")
    want = {"vip-one": ("rule:vip", "smart-b"), "fastlane": ("rule:lat", "lat-b"), "regular": ("default", "fast-a")}
    for name, (rule, model) in want.items():
        resp = post(r, chat("Hi"), bearer(keys[name]))
        assert resp.status_code == 200, resp.text
        assert (resp.headers.get("x-llm-router-rule"), resp.headers.get("x-llm-router-model")) == (rule, model), name


# ---------------------------------------------------------------------------
# identity_header
# ---------------------------------------------------------------------------


def test_identity_header_names_the_client(start_router, mock_a, mock_b):
    keyed = new_key("keyed")
    config = dict(CONFIG, clients={"identity_header": "x-client-name", "keys": [
        {"name": "idc", "rpm": 2, "models": ["fast"]},
        {"name": "keyed", "key_sha256": sha(keyed), "rpm": 5}]})
    r = start_router(mock_a=mock_a, mock_b=mock_b, plugin_config=config, concurrency=4,
                     name="clients-identity")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpZGMifQ.c2lnbmF0dXJl"
    ids = [rid(), rid()]
    first = post(r, chat("Hi", model="fast"),
                 {"x-client-name": "idc", "authorization": "Bearer " + jwt, "x-request-id": ids[0]})
    assert (first.status_code, served_by(first)) == (200, "a"), first.text
    assert_ratelimit(first, "requests", 2, 1)  # idc's limits
    # idc's models apply.
    assert_openai_error(post(r, chat("Hi", model="smart"), {"x-client-name": "idc"}), 403,
                        "model_not_allowed", "model", "permission_error")
    second = post(r, chat("Hi", model="fast"), {"x-client-name": "idc", "x-request-id": ids[1]})
    assert second.status_code == 200, second.text
    assert_ratelimit(second, "requests", 2, 0)
    assert_429(post(r, chat("Hi", model="fast"), {"x-client-name": "idc"}), "requests")
    # Unknown names: 401, even with a valid key beside (the credentials are not looked at).
    assert_401(post(r, chat("Hi", model="fast"), {"x-client-name": "nobody"}), "invalid_api_key")
    assert_401(post(r, chat("Hi", model="fast"), dict(bearer(keyed), **{"x-client-name": "nobody"})),
               "invalid_api_key")
    assert_401(get(r, "/v1/models", {"x-client-name": "nobody"}), "invalid_api_key")
    # Without the header, keys work as usual.
    by_key = post(r, chat("Hi", model="smart"), bearer(keyed))
    assert (by_key.status_code, served_by(by_key)) == (200, "b"), by_key.text
    assert_ratelimit(by_key, "requests", 5, 4)
    assert_401(post(r, chat("Hi", model="fast")), "missing_api_key")
    # Passed-through paths lose the header too.
    assert get(r, "/v1/files", {"x-client-name": "keyed"}).status_code == 200

    received = upstream_requests(mock_a, mock_b)
    assert len(received) == 4, [(q.method, q.path) for q in received]
    for req in received:
        assert req.header("x-client-name") is None, req.headers
        assert jwt not in str(req.headers)
    for line in log_lines(r, ids):
        assert line.get("client") == "idc", line


# ---------------------------------------------------------------------------
# Window recovery (last: it waits for the window filled when the module started)
# ---------------------------------------------------------------------------


def test_window_recovers_after_retry_after(router, filled_window, mock_a):
    limited_at, retry_after = filled_window
    assert 1 <= retry_after <= 60, retry_after
    # Still full shortly before Retry-After runs out (when the other tests left time for it).
    before = limited_at + retry_after - 2.5
    if retry_after >= 4 and time.monotonic() < before:
        time.sleep(before - time.monotonic())
        assert_429(post(router, chat("Hi", model="fast"), auth("slow")), "requests")
    time.sleep(max(0.0, limited_at + retry_after + 0.5 - time.monotonic()))
    resp = post(router, chat("Hi", model="fast"), auth("slow"))
    assert resp.status_code == 200, (resp.status_code, resp.text, retry_after)
    assert_ratelimit(resp, "requests", 1, 0)
    assert_429(post(router, chat("Hi", model="fast"), auth("slow")), "requests")
    assert len(mock_a.requests) == 1
