"""Compressed answers are counted: usage, cost, stats and client limits are those of the
uncompressed answer, whatever the client accepts, and the client still gets a correct body.

The mock provider compresses (gzip, br, zstd, deflate) when the request's Accept-Encoding
allows it, as providers behind CDNs do. The bundled Envoy decompresses gzip answers before
the router (and before the failover attempt filter), the router asks upstream only for gzip
(it drops the client's Accept-Encoding; the decompressor adds its own), and Envoy's
compressor serves clients that accept gzip. With a held answer (`usage.cost_header`) the
router ends the body where its JSON closes: the decompressor's trailers wait for it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import time

import httpx
import pytest

from harness import EnvoyRouter, bundled_plugin_config

MOCK_KEY = "test-mock-key"
CLIENT_KEY = "sk-compress-" + secrets.token_hex(12)
SDK_ACCEPT = "gzip, deflate"  # what the official SDKs send
CODINGS = ["gzip", "br", "zstd", "deflate"]


def plugin_config() -> dict:
    config = bundled_plugin_config()
    config["models"]["pair"] = {"targets": [
        {"upstream": "mock-a", "model": "mock-small", "price": {"input": 0.15, "output": 0.6}},
        {"upstream": "mock-b", "model": "mock-large", "price": {"input": 2.5, "output": 10}}]}
    config["clients"] = {"keys": [{"name": "team", "key_sha256": hashlib.sha256(CLIENT_KEY.encode()).hexdigest(),
                                   "tpm": 1000000, "monthly_budget": 1000}]}
    return config


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, env={"MOCK_API_KEY": MOCK_KEY},
                     plugin_config=plugin_config(), name="compress") as r:
        yield r


def expected_usage(mock) -> tuple[int, int]:
    """The usage the mock reported for its last request (its own formula)."""
    rec = mock.requests[-1]
    text = "%s received model=%s path=%s" % (mock.name, rec.json()["model"], rec.path)
    return (len(rec.body) + 3) // 4, len(text.split())


def log_line(router, rid: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        lines = {ln.get("request_id"): ln for ln in router.access_log(0, timeout=0)}
        if rid in lines or time.monotonic() > deadline:
            assert rid in lines, "no access-log line for %s" % rid
            return lines[rid]
        time.sleep(0.1)


def client_stats(router) -> dict:
    c = router.counters("wasmcustom.llm_router.client.team.")
    return {k.rsplit(".", 1)[1]: v for k, v in c.items()}


def send(router, model: str, stream: bool, accept, rid: str):
    headers = {"authorization": "Bearer " + CLIENT_KEY, "x-request-id": rid}
    if accept is not None:
        headers["accept-encoding"] = accept
    body = {"model": model, "messages": [{"role": "user", "content": "hello " + rid}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    # Raw bytes as they arrive: the test decodes them itself.
    with httpx.Client(timeout=20) as c:
        with c.stream("POST", router.url + "/v1/chat/completions", json=body, headers=headers) as resp:
            raw = b"".join(resp.iter_raw())
            return resp, raw


def decoded(resp, raw: bytes) -> bytes:
    coding = resp.headers.get("content-encoding")
    if coding is None:
        return raw
    assert coding == "gzip", coding  # the only coding the bundled compressor speaks
    return gzip.decompress(raw)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("route", ["direct", "failover"])
def test_usage_of_compressed_answers_is_counted_exactly(router, mock_a, mock_b, coding, stream, route):
    mock_a.compress = mock_b.compress = coding
    model = "fast" if route == "direct" else "pair"
    before = client_stats(router)
    rid = "cmp-%s-%s-%s-%s" % (route, coding, stream, secrets.token_hex(3))
    resp, raw = send(router, model, stream, SDK_ACCEPT, rid)
    assert resp.status_code == 200, raw[:300]
    body = decoded(resp, raw)
    got = mock_a.requests[-1]
    # The provider was asked only for what Envoy decompresses in full: gzip, never the
    # client's deflate (no decoder) nor br or zstd (decoders that cut repetitive answers).
    accept = [t.strip() for t in (got.header("accept-encoding") or "").split(",") if t.strip()]
    assert accept == ["gzip"], accept
    prompt, completion = expected_usage(mock_a)
    if stream:
        text = body.decode()
        assert resp.headers.get("content-encoding") is None, "event streams stay uncompressed"
        assert "data: [DONE]" in text and '"usage"' in text, text[-300:]
    else:
        doc = json.loads(body)
        assert doc["usage"]["prompt_tokens"] == prompt, doc
        assert resp.headers.get("content-encoding") == "gzip", "a client that accepts gzip gets it"
    line = log_line(router, rid)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt, completion), line
    micro = prompt * 0.15 + completion * 0.6  # mock-small's price per million tokens
    assert line["cost"] == pytest.approx(micro / 1e6), line
    after = client_stats(router)
    assert after.get("prompt_tokens", 0) - before.get("prompt_tokens", 0) == prompt, (before, after)
    assert after.get("completion_tokens", 0) - before.get("completion_tokens", 0) == completion
    assert abs(after.get("cost_micro", 0) - before.get("cost_micro", 0) - micro) <= 1, (before, after)


@pytest.mark.parametrize("accept", ["identity", "br"])
def test_clients_that_do_not_accept_gzip_get_plain_bodies(router, mock_a, mock_b, accept):
    mock_a.compress = "gzip"
    rid = "plain-%s" % secrets.token_hex(3)
    resp, raw = send(router, "fast", False, accept, rid)
    assert resp.status_code == 200
    assert resp.headers.get("content-encoding") is None, resp.headers
    doc = json.loads(raw)
    assert doc["usage"]["prompt_tokens"] == expected_usage(mock_a)[0]
    # The provider did compress: the router read it decompressed.
    assert "gzip" in (mock_a.requests[-1].header("accept-encoding") or "")
    assert log_line(router, rid)["completion_tokens"] == expected_usage(mock_a)[1]


def repetitive_answer(size: int) -> dict:
    """An answer that deflate shrinks about a thousand times (a model repeating itself)."""
    return {"id": "chatcmpl-rep", "object": "chat.completion", "created": 1, "model": "mock-small",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "a" * size}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


@pytest.mark.parametrize("route", ["direct", "failover"])
def test_a_very_repetitive_answer_is_neither_cut_nor_miscounted(router, mock_a, mock_b, route):
    """Envoy's decompressors stop at 100 times inflation by default; gzip's own limit is 1032."""
    mock_a.compress = mock_b.compress = "gzip"
    answer = repetitive_answer(4 << 20)
    mock_a.set_response(body=answer, times=1)
    rid = "rep-%s-%s" % (route, secrets.token_hex(3))
    try:
        resp, raw = send(router, "fast" if route == "direct" else "pair", False, "identity", rid)
    finally:
        mock_a.reset_response()
    assert resp.status_code == 200
    doc = json.loads(raw)
    assert doc["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
    line = log_line(router, rid)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 7), line


def test_an_answer_marked_no_transform_is_read(router, mock_a):
    mock_a.compress = "gzip"
    mock_a.set_response(body=repetitive_answer(100), headers={"cache-control": "no-transform"}, times=1)
    rid = "nt-%s" % secrets.token_hex(3)
    try:
        resp, raw = send(router, "fast", False, "identity", rid)
    finally:
        mock_a.reset_response()
    assert resp.status_code == 200
    assert json.loads(raw)["usage"]["completion_tokens"] == 7
    assert (log_line(router, rid)["completion_tokens"]) == 7


@pytest.fixture(scope="module")
def cost_router(_mock_a, _mock_b):
    config = plugin_config()
    config["usage"] = dict(config.get("usage") or {}, cost_header=True)
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, env={"MOCK_API_KEY": MOCK_KEY},
                     plugin_config=config, name="compress-cost") as r:
        yield r


@pytest.mark.parametrize("accept", ["identity", SDK_ACCEPT])
@pytest.mark.parametrize("route", ["direct", "failover"])
def test_the_cost_header_of_a_compressed_answer_comes_without_waiting(cost_router, mock_a, mock_b, route, accept):
    """The held answer ends with the decompressor's trailers, which Envoy gives the router only
    once it lets the body go: the router ends the body where its JSON closes."""
    mock_a.compress = mock_b.compress = "gzip"
    rid = "cost-%s-%s" % (route, secrets.token_hex(3))
    started = time.monotonic()
    resp, raw = send(cost_router, "fast" if route == "direct" else "pair", False, accept, rid)
    assert time.monotonic() - started < 5, "the answer waited for the connection to close"
    assert resp.status_code == 200
    doc = json.loads(decoded(resp, raw))
    prompt, completion = expected_usage(mock_a)
    assert doc["usage"]["prompt_tokens"] == prompt
    micro = prompt * 0.15 + completion * 0.6
    assert float(resp.headers["x-llm-router-cost"]) == pytest.approx(micro / 1e6, abs=1e-6), resp.headers
