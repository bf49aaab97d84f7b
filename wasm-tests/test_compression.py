"""Compressed answers are counted: usage, cost, stats and client limits are those of the
uncompressed answer, whatever the client accepts, and the client still gets a correct body.

The mock provider compresses (gzip, br, zstd, deflate) when the request's Accept-Encoding
allows it, as providers behind CDNs do. The bundled Envoy decompresses answers before the
router (and before the failover attempt filter), the router asks upstream only for what
Envoy decompresses (it drops the client's Accept-Encoding; the decompressors add theirs),
and Envoy's compressor serves clients that accept gzip.
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
    # The provider was asked only for codings Envoy decompresses, never the client's deflate.
    accept = [t.strip() for t in (got.header("accept-encoding") or "").split(",") if t.strip()]
    assert "deflate" not in accept and set(accept) <= {"gzip", "br", "zstd"}, accept
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
