"""Accounting of translated requests (issue 16): "usage, cost, stats, the access log and client
limits work the same on translated requests, and same-format routing keeps today's byte-exact
edit".

Both directions, whole answers and streams: an OpenAI client (``/v1/chat/completions``) routed to
an ``format: anthropic`` upstream (mock-a answers in Anthropic's API), and an Anthropic client
(``/v1/messages``) routed to a ``format: openai`` upstream (mock-b). Each translated request is
set beside the same answer on a same-format route:

* the same upstream answer to a client of the upstream's own API: the router's accounting
  (access-log usage and cost, ``x-llm-router-cost``, the stats per target, rule and client)
  must be equal;
* the equivalent answer in the client's own API from an upstream of that API: the usage the
  client reads (cached prompt tokens included: Anthropic ``cache_read_input_tokens`` <->
  OpenAI ``prompt_tokens_details.cached_tokens``) must be equal.

Client limits (rpm, tpm, monthly budget) on translated requests count the translated answers'
usage and cost and refuse with a 429 in the client's API shape. With ``format`` set to the
client's own API the upstream gets the same bytes as without ``format`` (and the client the
provider's bytes), on every failover attempt too. Through failover across APIs, the attempt that
served decides the usage the client reads and the usage, price and cost the router reports.

One Envoy for the module; every test has targets (and clients) of its own, so stats are read
once, without "before" figures.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid

import httpx
import pytest

from harness import (STATS_AT_ROOT, STATS_AT_ROOT_WHY, EnvoyRouter, assert_openai_error, jdump,
                     replace_once, sample, scrape, wait_for_samples)

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"
#: USD per 1M tokens; cached prompt tokens at a tenth.
PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3}
#: 1000 micro-USD per token, whatever its kind: one answer spends a small monthly budget.
PRICE_BIG = {"input": 1000.0, "output": 1000.0}

# ---------------------------------------------------------------------------------------
# One logical answer, in both APIs: 150 prompt tokens (40 read from the cache, 10 written to
# it), 7 completion tokens ("Hello there" in two pieces when streamed).
# ---------------------------------------------------------------------------------------

#: What the router must count for it (access log, stats, limits).
TOKENS = {"prompt_tokens": 150, "completion_tokens": 7, "total_tokens": 157, "cached_tokens": 40}
#: Its cost by PRICE: 110 uncached prompt tokens at 3, 40 cached at 0.3, 7 completion at 15.
COST = (110 * 3.0 + 40 * 0.3 + 7 * 15.0) / 1e6
COST_MICRO = 447

#: As Anthropic reports it (the cache counts apart from ``input_tokens``).
ANTHROPIC_USAGE = {"input_tokens": 100, "cache_creation_input_tokens": 10,
                   "cache_read_input_tokens": 40, "output_tokens": 7}
#: As OpenAI reports it (cached tokens inside ``prompt_tokens``), 3 of them reasoning.
OPENAI_USAGE = {"prompt_tokens": 150, "completion_tokens": 7, "total_tokens": 157,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 3}}
#: What an OpenAI client reads of the Anthropic answer (no reasoning count in Anthropic's API).
OPENAI_CLIENT_USAGE = {"prompt_tokens": 150, "completion_tokens": 7, "total_tokens": 157,
                       "prompt_tokens_details": {"cached_tokens": 40}}
#: What an Anthropic client reads of the OpenAI answer (cache writes are not told apart).
ANTHROPIC_CLIENT_USAGE = {"input_tokens": 110, "output_tokens": 7, "cache_read_input_tokens": 40}


def anthropic_message(usage: dict) -> dict:
    return {"id": "msg_acct", "type": "message", "role": "assistant", "model": "upstream-model",
            "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": usage}


def openai_completion(usage: dict) -> dict:
    return {"id": "chatcmpl-acct", "object": "chat.completion", "created": 1, "model": "upstream-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage}


def sse(event: str | None, payload) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return (("event: %s\n" % event) if event else "").encode() + b"data: " + data.encode() + b"\n\n"


def anthropic_stream(start_usage: dict, delta_usage: dict) -> list[bytes]:
    """An Anthropic Messages stream, one event per chunk: the usage in message_start, and
    message_delta's counts over it."""
    return [
        sse("message_start", {"type": "message_start", "message": {
            "id": "msg_acct", "type": "message", "role": "assistant", "model": "upstream-model",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "Hello"}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": " there"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": delta_usage}),
        sse("message_stop", {"type": "message_stop"}),
    ]


def openai_stream(usage: dict) -> list[bytes]:
    """An OpenAI chat stream as sent with include_usage: chunks, the usage-only chunk, [DONE]."""
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-acct", "object": "chat.completion.chunk", "created": 1,
                "model": "upstream-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": None}
    return [
        sse(None, chunk({"role": "assistant", "content": ""})),
        sse(None, chunk({"content": "Hello"})),
        sse(None, chunk({"content": " there"})),
        sse(None, chunk({}, "stop")),
        sse(None, {"id": "chatcmpl-acct", "object": "chat.completion.chunk", "created": 1,
                   "model": "upstream-model", "choices": [], "usage": usage}),
        sse(None, "[DONE]"),
    ]


#: Anthropic streams carry the prompt's counts in message_start, the output in message_delta.
ANTHROPIC_STREAM = anthropic_stream(dict(ANTHROPIC_USAGE, output_tokens=1), {"output_tokens": 7})
#: The same answer as an Anthropic client would get it from an Anthropic provider.
ANTHROPIC_STREAM_EQUIVALENT = anthropic_stream(
    {"input_tokens": 110, "cache_read_input_tokens": 40, "output_tokens": 1}, {"output_tokens": 7})
OPENAI_STREAM = openai_stream(OPENAI_USAGE)
OPENAI_STREAM_EQUIVALENT = openai_stream(OPENAI_CLIENT_USAGE)

# ---------------------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------------------


def new_key(name: str) -> str:
    return "sk-acct-%s-%s" % (name, secrets.token_hex(12))


#: Clients, one (or a pair) per test: each with its limit, on a translated route.
CLIENT_SPECS = {
    "rpm-oa": {"rpm": 1}, "rpm-an": {"rpm": 1},
    "tpm-oa-whole": {"tpm": 100}, "tpm-oa-stream": {"tpm": 100},
    "tpm-an-whole": {"tpm": 100}, "tpm-an-stream": {"tpm": 100},
    "budget-oa": {"monthly_budget": 0.01}, "budget-an": {"monthly_budget": 0.01},
    # The stats test: per-client stats of translated and same-format requests.
    "st-x-oa": {}, "st-s-an": {}, "st-x-an": {}, "st-s-oa": {},
}
KEYS = {name: new_key(name) for name in CLIENT_SPECS}


def target(upstream: str, model: str, price=PRICE) -> dict:
    t = {"upstream": upstream, "model": model}
    if price is not None:
        t["price"] = price
    return {"targets": [t]}


def pair(up1: str, model1: str, up2: str, model2: str, price=PRICE) -> dict:
    return {"targets": [target(up1, model1, price)["targets"][0], target(up2, model2, price)["targets"][0]]}


CONFIG = {
    "upstreams": {
        "anth": {"cluster": "mock-a", "format": "anthropic",
                 "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        "anth-plain": {"cluster": "mock-a", "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        "oai": {"cluster": "mock-b", "format": "openai", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        "oai-plain": {"cluster": "mock-b", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    },
    "models": {
        # Usage, cost and the log: x- translated, s- same format (format set explicitly).
        "x-claude": target("anth", "x-claude"), "s-claude": target("anth", "s-claude"),
        "x-gpt": target("oai", "x-gpt"), "s-gpt": target("oai", "s-gpt"),
        # Stats: a target (and rule) each.
        "stx-claude": target("anth", "stx-claude"), "sts-claude": target("anth", "sts-claude"),
        "stx-gpt": target("oai", "stx-gpt"), "sts-gpt": target("oai", "sts-gpt"),
        # Client limits, translated.
        "l-claude": target("anth", "l-claude", PRICE_BIG), "l-gpt": target("oai", "l-gpt", PRICE_BIG),
        # The byte-exact edit: one model id, with and without `format`.
        "b-claude": target("anth", "b-model", None), "b-claude-plain": target("anth-plain", "b-model", None),
        "b-gpt": target("oai", "b-model", None), "b-gpt-plain": target("oai-plain", "b-model", None),
        # ... and through the failover cluster (the attempt filter's edit): two candidates each.
        "bf-claude": pair("anth", "b-model", "anth", "b-model-2", None),
        "bf-claude-plain": pair("anth-plain", "b-model", "anth-plain", "b-model-2", None),
        "bf-gpt": pair("oai", "b-model", "oai", "b-model-2", None),
        "bf-gpt-plain": pair("oai-plain", "b-model", "oai-plain", "b-model-2", None),
        # Failover across APIs: the served attempt's answer, usage and price, whichever API
        # (the failing first candidate's price is another).
        "fx-gpt-first": {"targets": [target("oai", "fx-gpt-down", PRICE_BIG)["targets"][0],
                                     target("anth", "fx-claude")["targets"][0]]},
        "fx-claude-first": {"targets": [target("anth", "fx-claude-down", PRICE_BIG)["targets"][0],
                                        target("oai", "fx-gpt")["targets"][0]]},
    },
    "failover": {"cluster": "llm_failover", "max_attempts": 2},
    "usage": {"include_stream_usage": True, "cost_header": True},
    # A provider's error (the stats test has one per target) cools nothing down.
    "health": {"allowed_fails": 100, "failure_rate": None},
    "clients": {"required": False,
                "keys": [dict(name=name, key_sha256=hashlib.sha256(KEYS[name].encode()).hexdigest(), **spec)
                         for name, spec in CLIENT_SPECS.items()]},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG, env={"MOCK_API_KEY": MOCK_KEY},
                     concurrency=2, name="translation-accounting") as r:
        yield r


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def rid() -> str:
    return "acct-" + uuid.uuid4().hex[:12]


def openai_body(model: str, stream: bool = False, include_usage: bool = False) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_body(model: str, stream: bool = False) -> dict:
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    return body


def send(router: EnvoyRouter, path: str, body, key: str | None = None, request_id: str | None = None,
         headers: dict | None = None) -> httpx.Response:
    """One request as its SDK would send it (Anthropic's version header on /v1/messages); the
    whole answer read (a stream too)."""
    h = {"content-type": "application/json", "x-request-id": request_id or rid()}
    if path == MESSAGES:
        h["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            h["x-api-key"] = key
    elif key:
        h["authorization"] = "Bearer " + key
    h.update(headers or {})
    content = body if isinstance(body, bytes) else jdump(body)
    return httpx.post(router.url + path, content=content, headers=h, timeout=10)


def events(resp: httpx.Response) -> list[tuple[str | None, object]]:
    """A server-sent event stream's (event name, parsed data) pairs (``[DONE]`` as the string)."""
    assert resp.headers.get("content-type", "").startswith("text/event-stream"), resp.headers
    out = []
    for block in resp.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, block
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def openai_stream_usage(resp: httpx.Response) -> dict | None:
    """The usage an OpenAI client reads of a chat stream (its usage-only chunk), or None."""
    found = [d["usage"] for _, d in events(resp) if isinstance(d, dict) and d.get("usage") is not None]
    assert len(found) <= 1, found
    return found[0] if found else None


def anthropic_stream_usage(resp: httpx.Response) -> dict:
    """The usage an Anthropic client reads of a Messages stream: message_start's, with each
    count message_delta reports over it (as the SDKs merge them)."""
    usage: dict = {}
    for name, d in events(resp):
        if name == "message_start":
            usage = dict(d["message"]["usage"])
        elif name == "message_delta":
            usage.update({k: v for k, v in d["usage"].items() if v is not None})
    return usage


def log_line(router: EnvoyRouter, request_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in router.access_log(0, timeout=0):
            if line.get("request_id") == request_id:
                return line
        assert time.monotonic() < deadline, "no access-log line for %s" % request_id
        time.sleep(0.05)


ACCOUNTED = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "cost")


def accounted(line: dict) -> dict:
    """The usage and cost of an access-log line (the cost rounded: it is a float)."""
    out = {k: line[k] for k in ACCOUNTED}
    out["cost"] = None if out["cost"] is None else round(out["cost"], 12)
    return out


def expected_accounting(reasoning) -> dict:
    return dict(TOKENS, reasoning_tokens=reasoning, cost=round(COST, 12))


def assert_anthropic_error(resp: httpx.Response, status: int, kind: str) -> dict:
    """The router's own error in Anthropic's shape; returns its `error` object."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type") == "application/json", resp.headers
    doc = resp.json()
    assert set(doc) == {"type", "error"} and doc["type"] == "error", doc
    assert set(doc["error"]) == {"type", "message"}, doc
    assert doc["error"]["type"] == kind, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc
    return doc["error"]


def assert_retry_after(resp: httpx.Response) -> int:
    ra = resp.headers.get("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, resp.headers
    return int(ra)


def assert_client_429(resp: httpx.Response, client_format: str, kind: str, code: str) -> None:
    """A 429 of the router's own in the client's API: OpenAI's ``type`` / ``code`` for chat
    clients, Anthropic's ``rate_limit_error`` for /v1/messages clients."""
    if client_format == "openai":
        assert_openai_error(resp, 429, code, None, kind)
    else:
        assert_anthropic_error(resp, 429, "rate_limit_error")
    assert_retry_after(resp)


# ---------------------------------------------------------------------------------------
# Usage, cost and the access log
# ---------------------------------------------------------------------------------------

#: direction -> (client path, translated alias, its upstream answer (mock, body), the same answer
#: to a client of the upstream's API (path, alias), the equivalent answer in the client's API
#: (alias, mock, body), the client's usage, the reasoning count the router reads)
WHOLE = {
    "openai-client-to-anthropic": dict(
        path=CHAT, alias="x-claude", mock="a", answer=anthropic_message(ANTHROPIC_USAGE),
        same_path=MESSAGES, same_alias="s-claude",
        equiv_alias="s-gpt", equiv_mock="b", equiv_answer=openai_completion(OPENAI_CLIENT_USAGE),
        client_usage=OPENAI_CLIENT_USAGE, reasoning=None),
    "anthropic-client-to-openai": dict(
        path=MESSAGES, alias="x-gpt", mock="b", answer=openai_completion(OPENAI_USAGE),
        same_path=CHAT, same_alias="s-gpt",
        equiv_alias="s-claude", equiv_mock="a",
        equiv_answer=anthropic_message({"input_tokens": 110, "cache_read_input_tokens": 40, "output_tokens": 7}),
        client_usage=ANTHROPIC_CLIENT_USAGE, reasoning=3),
}


def body_for(path: str, alias: str, stream: bool = False, include_usage: bool = False) -> dict:
    return (openai_body(alias, stream, include_usage) if path == CHAT else anthropic_body(alias, stream))


@pytest.mark.core
@pytest.mark.parametrize("direction", list(WHOLE))
def test_whole_answer_usage_cost_header_and_log_match_the_same_format_route(router, mock_a, mock_b, direction):
    d = WHOLE[direction]
    mocks = {"a": mock_a, "b": mock_b}
    ids = {k: rid() for k in ("x", "same", "equiv")}

    mocks[d["mock"]].set_response(200, d["answer"], times=1)
    translated = send(router, d["path"], body_for(d["path"], d["alias"]), request_id=ids["x"])
    assert translated.status_code == 200, translated.text
    # It was translated: the upstream got its own API.
    sent = mocks[d["mock"]].last_request
    assert sent.path == (MESSAGES if d["path"] == CHAT else CHAT), sent.path

    mocks[d["mock"]].set_response(200, d["answer"], times=1)
    same = send(router, d["same_path"], body_for(d["same_path"], d["same_alias"]), request_id=ids["same"])
    assert same.status_code == 200, same.text
    assert same.json() == d["answer"]  # same format: the provider's answer as it was

    mocks[d["equiv_mock"]].set_response(200, d["equiv_answer"], times=1)
    equiv = send(router, d["path"], body_for(d["path"], d["equiv_alias"]), request_id=ids["equiv"])
    assert equiv.status_code == 200, equiv.text

    # The client reads the usage it would read from a provider of its own API.
    if d["path"] == CHAT:
        assert translated.json()["object"] == "chat.completion"
    else:
        assert translated.json()["type"] == "message"
    assert translated.json()["usage"] == equiv.json()["usage"] == d["client_usage"]

    # The router reports the same usage and cost as for the same answer untranslated.
    lines = {k: log_line(router, i) for k, i in ids.items()}
    want = expected_accounting(d["reasoning"])
    assert accounted(lines["x"]) == accounted(lines["same"]) == want, lines
    assert (lines["x"]["status"], lines["x"]["target"]) == (200, "%s/%s" % (
        "anth" if d["mock"] == "a" else "oai", d["alias"]))
    assert lines["x"]["stream"] is False and lines["x"]["error"] is None
    # The client's endpoint, and the model it asked for.
    assert (lines["x"]["endpoint"], lines["x"]["requested_model"]) == (
        "chat" if d["path"] == CHAT else "messages", d["alias"])
    # The equivalent answer in the client's own API: the same tokens and cost (reasoning aside).
    assert {k: v for k, v in accounted(lines["equiv"]).items() if k != "reasoning_tokens"} == \
        {k: v for k, v in want.items() if k != "reasoning_tokens"}

    # x-llm-router-cost: the same figure, on the translated answer too.
    assert "x-llm-router-cost" in translated.headers, translated.headers
    assert translated.headers["x-llm-router-cost"] == same.headers["x-llm-router-cost"]
    assert float(translated.headers["x-llm-router-cost"]) == pytest.approx(COST, abs=1e-12)


STREAMS = {
    "openai-client-to-anthropic": dict(
        path=CHAT, alias="x-claude", mock="a", stream=ANTHROPIC_STREAM,
        same_path=MESSAGES, same_alias="s-claude",
        equiv_alias="s-gpt", equiv_mock="b", equiv_stream=OPENAI_STREAM_EQUIVALENT,
        client_usage=OPENAI_CLIENT_USAGE, reasoning=None),
    "anthropic-client-to-openai": dict(
        path=MESSAGES, alias="x-gpt", mock="b", stream=OPENAI_STREAM,
        same_path=CHAT, same_alias="s-gpt",
        equiv_alias="s-claude", equiv_mock="a", equiv_stream=ANTHROPIC_STREAM_EQUIVALENT,
        client_usage=ANTHROPIC_CLIENT_USAGE, reasoning=3),
}


def stream_text(path: str, resp: httpx.Response) -> str:
    out = []
    for _, e in events(resp):
        if not isinstance(e, dict):
            continue
        if path == CHAT and e.get("choices"):
            out.append(e["choices"][0]["delta"].get("content") or "")
        elif path == MESSAGES and e.get("type") == "content_block_delta":
            out.append(e["delta"].get("text", ""))
    return "".join(out)


def stream_usage(path: str, resp: httpx.Response):
    return openai_stream_usage(resp) if path == CHAT else anthropic_stream_usage(resp)


@pytest.mark.parametrize("direction", list(STREAMS))
def test_streamed_usage_and_log_match_the_same_format_route(router, mock_a, mock_b, direction):
    d = STREAMS[direction]
    mocks = {"a": mock_a, "b": mock_b}
    ids = {k: rid() for k in ("x", "same", "equiv")}
    # OpenAI clients ask for the usage chunk (the router's own request for it is hidden).
    include = d["path"] == CHAT

    mocks[d["mock"]].set_stream(d["stream"], times=1)
    translated = send(router, d["path"], body_for(d["path"], d["alias"], True, include), request_id=ids["x"])
    assert translated.status_code == 200, translated.text
    sent = mocks[d["mock"]].last_request.json()
    assert sent["stream"] is True
    if d["mock"] == "b":
        # Toward OpenAI the router asks for the stream's usage.
        assert sent["stream_options"] == {"include_usage": True}
    else:
        # Anthropic always reports it: no OpenAI stream option reaches it.
        assert "stream_options" not in sent

    mocks[d["mock"]].set_stream(d["stream"], times=1)
    same = send(router, d["same_path"], body_for(d["same_path"], d["same_alias"], True, d["same_path"] == CHAT),
                request_id=ids["same"])
    assert same.status_code == 200, same.text
    assert same.content == b"".join(d["stream"])  # same format: the provider's bytes

    mocks[d["equiv_mock"]].set_stream(d["equiv_stream"], times=1)
    equiv = send(router, d["path"], body_for(d["path"], d["equiv_alias"], True, include), request_id=ids["equiv"])
    assert equiv.status_code == 200, equiv.text

    assert stream_text(d["path"], translated) == stream_text(d["path"], equiv) == "Hello there"
    assert stream_usage(d["path"], translated) == stream_usage(d["path"], equiv) == d["client_usage"]

    lines = {k: log_line(router, i) for k, i in ids.items()}
    want = expected_accounting(d["reasoning"])
    assert accounted(lines["x"]) == accounted(lines["same"]) == want, lines
    assert lines["x"]["stream"] is True and lines["x"]["status"] == 200
    assert {k: v for k, v in accounted(lines["equiv"]).items() if k != "reasoning_tokens"} == \
        {k: v for k, v in want.items() if k != "reasoning_tokens"}
    # Streams carry no cost header, translated or not.
    assert "x-llm-router-cost" not in translated.headers and "x-llm-router-cost" not in same.headers


def test_an_openai_client_that_did_not_ask_gets_no_usage_chunk_but_the_log_counts(router, mock_a):
    mock_a.set_stream(ANTHROPIC_STREAM, times=1)
    request_id = rid()
    resp = send(router, CHAT, openai_body("x-claude", stream=True), request_id=request_id)
    assert resp.status_code == 200, resp.text
    assert openai_stream_usage(resp) is None
    assert events(resp)[-1] == (None, "[DONE]")
    assert accounted(log_line(router, request_id)) == expected_accounting(None)


# ---------------------------------------------------------------------------------------
# Stats per target, rule and client
# ---------------------------------------------------------------------------------------


@pytest.mark.envoy_since(STATS_AT_ROOT, STATS_AT_ROOT_WHY)
def test_stats_count_translated_requests_and_tokens_like_same_format_ones(router, mock_a, mock_b):
    """Per direction, a whole answer, a stream and a provider's 503 translated (stx-*), and the
    same upstream answers to a client of the upstream's API (sts-*): equal counts per target,
    rule and client."""
    anthropic_503 = {"type": "error", "error": {"type": "overloaded_error", "message": "down"}}
    openai_503 = {"error": {"message": "down", "type": "server_error"}}
    plan = [
        # (client path, alias, mock, whole answer, stream, error, client)
        (CHAT, "stx-claude", mock_a, anthropic_message(ANTHROPIC_USAGE), ANTHROPIC_STREAM, anthropic_503, "st-x-oa"),
        (MESSAGES, "sts-claude", mock_a, anthropic_message(ANTHROPIC_USAGE), ANTHROPIC_STREAM, anthropic_503,
         "st-s-an"),
        (MESSAGES, "stx-gpt", mock_b, openai_completion(OPENAI_USAGE), OPENAI_STREAM, openai_503, "st-x-an"),
        (CHAT, "sts-gpt", mock_b, openai_completion(OPENAI_USAGE), OPENAI_STREAM, openai_503, "st-s-oa"),
    ]
    for path, alias, mock, whole, stream, error, client in plan:
        mock.set_response(200, whole, times=1)
        assert send(router, path, body_for(path, alias), key=KEYS[client]).status_code == 200
        mock.set_stream(stream, times=1)
        # OpenAI clients' streams without include_usage: the router counts the usage anyway.
        resp = send(router, path, body_for(path, alias, stream=True), key=KEYS[client])
        assert resp.status_code == 200 and b"Hello" in resp.content, resp.text
        mock.set_response(503, error, times=1)
        assert send(router, path, body_for(path, alias), key=KEYS[client]).status_code == 503
    assert len(mock_a.requests) == len(mock_b.requests) == 6

    pairs = [(("anth/stx-claude", "model:stx-claude", "st-x-oa"), ("anth/sts-claude", "model:sts-claude", "st-s-an")),
             (("oai/stx-gpt", "model:stx-gpt", "st-x-an"), ("oai/sts-gpt", "model:sts-gpt", "st-s-oa"))]

    def figures(s, target_label, rule, client):
        f = {}
        for scope, label in (("target", target_label), ("rule", rule)):
            kw = {scope: label}
            for stat in ("requests", "prompt_tokens", "completion_tokens", "cost_micro_usd", "in_flight",
                         "latency_ms_count"):
                f[(scope, stat)] = sample(s, "llm_router_%s_%s" % (scope, stat), 0.0, **kw)
            for cls in ("5xx", "429", "connect", "timeout"):
                f[(scope, "failures", cls)] = sample(s, "llm_router_%s_failures" % scope, 0.0, cls=cls, **kw)
        for stat in ("requests", "prompt_tokens", "completion_tokens", "cost_micro"):
            f[("client", stat)] = sample(s, "llm_router_client_%s" % stat, 0.0, client=client)
        return f

    # The error reports no usage: the tokens and cost are the two answers' (and only successes
    # have a latency).
    want = {("target", "requests"): 3, ("target", "prompt_tokens"): 300, ("target", "completion_tokens"): 14,
            ("target", "cost_micro_usd"): 2 * COST_MICRO, ("target", "in_flight"): 0,
            ("target", "latency_ms_count"): 2,
            ("client", "requests"): 3, ("client", "prompt_tokens"): 300, ("client", "completion_tokens"): 14,
            ("client", "cost_micro"): 2 * COST_MICRO}
    want.update({("rule",) + k[1:]: v for k, v in want.items() if k[0] == "target"})
    want.update({(scope, "failures", cls): int(cls == "5xx") for scope in ("target", "rule")
                 for cls in ("5xx", "429", "connect", "timeout")})

    def check(s):
        for translated, same in pairs:
            got_x, got_s = figures(s, *translated), figures(s, *same)
            assert got_x == got_s, (translated, got_x, same, got_s)
            for k, v in want.items():
                assert abs(got_x[k] - v) <= (2 if "cost" in k[1] else 0), (translated, k, got_x[k], v)
    wait_for_samples(router, check, timeout=6.0)


# ---------------------------------------------------------------------------------------
# Client limits, translated: the 429 in the client's API
# ---------------------------------------------------------------------------------------

#: client format -> (path, translated alias, its mock, an answer with the usage, its stream)
LIMITED = {
    "openai": (CHAT, "l-claude", "a", anthropic_message(ANTHROPIC_USAGE), ANTHROPIC_STREAM),
    "anthropic": (MESSAGES, "l-gpt", "b", openai_completion(OPENAI_USAGE), OPENAI_STREAM),
}
SHORT = {"openai": "oa", "anthropic": "an"}


@pytest.mark.core
@pytest.mark.parametrize("client_format", list(LIMITED))
def test_rpm_over_a_translated_route_is_429_in_the_clients_shape(router, mock_a, mock_b, client_format):
    path, alias, mock_name, answer, _ = LIMITED[client_format]
    mock = {"a": mock_a, "b": mock_b}[mock_name]
    key = KEYS["rpm-" + SHORT[client_format]]
    mock.set_response(200, answer, times=1)
    first = send(router, path, body_for(path, alias), key=key)
    assert first.status_code == 200, first.text
    # The client's figures in place of the provider's, on the translated answer too.
    assert (first.headers.get("x-ratelimit-limit-requests"), first.headers.get("x-ratelimit-remaining-requests")) \
        == ("1", "0"), first.headers
    assert mock.last_request.path == (MESSAGES if path == CHAT else CHAT)  # translated
    request_id = rid()
    second = send(router, path, body_for(path, alias), key=key, request_id=request_id)
    assert_client_429(second, client_format, "requests", "rate_limit_exceeded")
    assert second.headers.get("x-ratelimit-limit-requests") == "1", second.headers
    assert len(mock.requests) == 1
    line = log_line(router, request_id)
    assert (line["status"], line.get("client"), line["error"]) == (429, "rpm-" + SHORT[client_format],
                                                                   "rate_limit_exceeded"), line


@pytest.mark.parametrize("how", ["whole", "stream"])
@pytest.mark.parametrize("client_format", list(LIMITED))
def test_tpm_counts_the_translated_answers_usage(router, mock_a, mock_b, client_format, how):
    """tpm 100: the prompt estimate of "Say hello." is far below it; the answer reports 157
    tokens, so the next request is over the limit only if the translated usage was counted."""
    path, alias, mock_name, answer, stream = LIMITED[client_format]
    mock = {"a": mock_a, "b": mock_b}[mock_name]
    key = KEYS["tpm-%s-%s" % (SHORT[client_format], how)]
    if how == "whole":
        mock.set_response(200, answer, times=1)
    else:
        mock.set_stream(stream, times=1)
    first_id = rid()
    first = send(router, path, body_for(path, alias, stream=how == "stream"), key=key, request_id=first_id)
    assert first.status_code == 200, first.text
    assert first.headers.get("x-ratelimit-limit-tokens") == "100", first.headers
    # The usage is counted when the first request ends, before its access-log line is written.
    assert log_line(router, first_id)["total_tokens"] == 157
    second = send(router, path, body_for(path, alias), key=key)
    assert_client_429(second, client_format, "tokens", "rate_limit_exceeded")
    assert second.headers.get("x-ratelimit-remaining-tokens") == "0", second.headers


@pytest.mark.envoy_since(STATS_AT_ROOT, STATS_AT_ROOT_WHY)
@pytest.mark.parametrize("client_format", list(LIMITED))
def test_monthly_budget_spent_on_a_translated_route_is_429_in_the_clients_shape(router, mock_a, mock_b,
                                                                              client_format):
    """Budget 0.01; the translated answer costs 157 tokens x 0.001 = 0.157 by the target's price.
    The client's stats count its spend and the 429."""
    path, alias, mock_name, answer, _ = LIMITED[client_format]
    mock = {"a": mock_a, "b": mock_b}[mock_name]
    key = KEYS["budget-" + SHORT[client_format]]
    mock.set_response(200, answer, times=1)
    first_id = rid()
    first = send(router, path, body_for(path, alias), key=key, request_id=first_id)
    assert first.status_code == 200, first.text
    assert float(first.headers["x-llm-router-cost"]) == pytest.approx(0.157, abs=1e-9)
    # The cost is added when the first request ends, before its access-log line is written.
    assert log_line(router, first_id)["cost"] == pytest.approx(0.157, abs=1e-9)
    second = send(router, path, body_for(path, alias), key=key)
    assert_client_429(second, client_format, "insufficient_quota", "insufficient_quota")
    assert len(mock.requests) == 1
    name = "budget-" + SHORT[client_format]
    prefix = "wasmcustom.llm_router.client.%s." % name
    want = {"requests": 1, "rate_limited": 1, "prompt_tokens": 150, "completion_tokens": 7, "cost_micro": 157000}
    deadline = time.monotonic() + 5
    while True:
        stats = {k[len(prefix):]: v for k, v in router.counters(prefix).items()}
        if {k: stats.get(k) for k in want} == want or time.monotonic() > deadline:
            break
    assert {k: stats.get(k) for k in want} == want, stats


# ---------------------------------------------------------------------------------------
# Same format with `format` set: today's byte-exact edit
# ---------------------------------------------------------------------------------------

#: Bodies a client may send, odd spacing, escapes, number spellings and key order included: the
#: router edits only the model's value (and, for streamed chat, adds include_usage).
OPENAI_RAW = ('{ "messages" : [ {"role":"user", "content":"Caf\\u00e9 \u2615  two  spaces"} ],\n'
              '  "model" :"%s" , "temperature":0.50, "max_tokens": 10, "x_extra": {"keep": [1, 2.0, -0]},'
              ' "user":"u\\/1"%s }')
ANTHROPIC_RAW = ('{"max_tokens":64 ,"system" : [{"type":"text","text":"Be \\"brief\\"."}],\n'
                 '"messages":[{"role":"user","content":[{"type":"text","text":"\u00e9\\n"}]}],'
                 '"model":  "%s", "metadata":{"user_id":"x"}, "top_k": 5%s}')
IGNORED_HEADERS = {"x-request-id", "x-envoy-expected-rq-timeout-ms"}

#: client format -> (path, raw template, alias with `format`, alias without, the mock)
BYTES = {
    "openai": (CHAT, OPENAI_RAW, "b-gpt", "b-gpt-plain", "b"),
    "anthropic": (MESSAGES, ANTHROPIC_RAW, "b-claude", "b-claude-plain", "a"),
}


def headers_of(rec) -> list:
    return [(k.lower(), v) for k, v in rec.headers if k.lower() not in IGNORED_HEADERS]


@pytest.mark.core
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client_format", list(BYTES))
def test_format_equal_to_the_clients_keeps_the_byte_exact_edit(router, mock_a, mock_b, client_format, stream):
    path, raw, with_format, without, mock_name = BYTES[client_format]
    mock = {"a": mock_a, "b": mock_b}[mock_name]
    # A streamed chat client asks for the usage chunk itself: nothing but the model is edited.
    tail = (', "stream" : true' + (', "stream_options": {"include_usage" : true}' if path == CHAT else "")
            if stream else "")
    extra = {"anthropic-beta": "prompt-caching-2024-07-31"} if path == MESSAGES else {}
    # The provider's answer, in the client's API, with spacing of its own.
    if stream:
        answer = b"".join(ANTHROPIC_STREAM if path == MESSAGES else OPENAI_STREAM).replace(b'":', b'" : ')
    else:
        answer = (jdump(anthropic_message(ANTHROPIC_USAGE)) if path == MESSAGES
                  else jdump(openai_completion(OPENAI_USAGE))).replace(b",", b" ,\n ")
    got = {}
    for alias in (with_format, without):
        body = (raw % (alias, tail)).encode("utf-8")
        if stream:
            mock.set_stream([answer], times=1)
        else:
            mock.set_response(200, answer, times=1)
        resp = send(router, path, body, headers=extra)
        assert resp.status_code == 200, resp.text
        rec = mock.last_request
        got[alias] = (rec.path, rec.body, headers_of(rec), resp.content)
    want_body = replace_once((raw % (without, tail)), '"%s"' % without, '"b-model"')
    want_body = want_body.encode("utf-8")
    (p1, b1, h1, r1), (p2, b2, h2, r2) = got[with_format], got[without]
    assert (p1, b1) == (p2, b2) == (path, want_body)
    assert h1 == h2
    h = dict(h1)
    assert h["content-length"] == str(len(want_body))
    if path == MESSAGES:
        # The client's own Anthropic headers, untouched.
        assert h["anthropic-version"] == ANTHROPIC_VERSION and h["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert h["x-api-key"] == MOCK_KEY
    else:
        assert "anthropic-version" not in h and h["authorization"] == "Bearer " + MOCK_KEY
    # And the answer reaches the client as the provider wrote it (not translated).
    assert r1 == r2 == answer


#: client format -> (path, alias with `format`, alias without, the mock)
FAILOVER_BYTES = {
    "openai": (CHAT, OPENAI_RAW, "bf-gpt", "bf-gpt-plain", "b"),
    "anthropic": (MESSAGES, ANTHROPIC_RAW, "bf-claude", "bf-claude-plain", "a"),
}


@pytest.mark.parametrize("client_format", list(FAILOVER_BYTES))
def test_format_equal_to_the_clients_keeps_the_byte_exact_edit_on_every_failover_attempt(
        router, mock_a, mock_b, client_format):
    """The first candidate answers 503, the second serves: both attempts get the same bytes
    with `format` as without, the client's bytes with the model's value replaced."""
    path, raw, with_format, without, mock_name = FAILOVER_BYTES[client_format]
    mock = {"a": mock_a, "b": mock_b}[mock_name]
    got = {}
    for alias in (with_format, without):
        mock.clear()
        mock.set_response(503, {"error": {"message": "down", "type": "server_error"}}, times=1)
        resp = send(router, path, (raw % (alias, "")).encode("utf-8"))
        assert resp.status_code == 200 and resp.headers["x-llm-router-attempts"] == "2", resp.text
        got[alias] = [(rec.path, rec.body, headers_of(rec)) for rec in mock.requests]
    want = [replace_once(raw % (without, ""), '"%s"' % without, '"%s"' % model).encode("utf-8")
            for model in ("b-model", "b-model-2")]
    assert got[with_format] == got[without]
    assert [(p, b) for p, b, _ in got[with_format]] == [(path, w) for w in want]
    if path == CHAT:
        assert all("anthropic-version" not in dict(h) for _, _, h in got[with_format])


#: (client path, alias, the failing mock, the serving mock, its answer, its stream, the client's usage, reasoning)
FAILOVER_SERVED = {
    "openai-client-served-by-anthropic": (CHAT, "fx-gpt-first", "b", "a", anthropic_message(ANTHROPIC_USAGE),
                                          ANTHROPIC_STREAM, OPENAI_CLIENT_USAGE, None),
    "anthropic-client-served-by-openai": (MESSAGES, "fx-claude-first", "a", "b", openai_completion(OPENAI_USAGE),
                                          OPENAI_STREAM, ANTHROPIC_CLIENT_USAGE, 3),
}
FAILURES = {"a": {"type": "error", "error": {"type": "overloaded_error", "message": "down"}},
            "b": {"error": {"message": "down", "type": "server_error"}}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(FAILOVER_SERVED))
def test_a_translated_failover_attempt_reports_the_usage_and_cost_of_the_target_that_served(
        router, mock_a, mock_b, case, stream):
    """The first candidate speaks the client's API and fails; the second, in the other API,
    serves: the client reads its usage in its own API, and the log (and x-llm-router-cost)
    has the serving target's usage and cost."""
    path, alias, failing, serving, answer, events_, client_usage, reasoning = FAILOVER_SERVED[case]
    mocks = {"a": mock_a, "b": mock_b}
    mocks[failing].set_response(529 if failing == "a" else 503, FAILURES[failing], times=1)
    if stream:
        mocks[serving].set_stream(events_, times=1)
    else:
        mocks[serving].set_response(200, answer, times=1)
    request_id = rid()
    resp = send(router, path, body_for(path, alias, stream, include_usage=stream), request_id=request_id)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert len(mocks[failing].requests) == len(mocks[serving].requests) == 1
    usage = stream_usage(path, resp) if stream else resp.json()["usage"]
    assert usage == client_usage
    line = log_line(router, request_id)
    assert line["target"] == ("anth/fx-claude" if serving == "a" else "oai/fx-gpt"), line
    assert (line["attempts"], line["status"]) == (2, 200)
    assert accounted(line) == expected_accounting(reasoning)
    if stream:
        assert "x-llm-router-cost" not in resp.headers
    else:
        assert float(resp.headers["x-llm-router-cost"]) == pytest.approx(COST, abs=1e-12)
