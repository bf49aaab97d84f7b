"""End-to-end streaming, usage, cost and the JSONL access log, through the real Envoy.

* Server-sent events reach the client as the mock sends them (controlled timing), never
  held until the end.
* Usage is read from streams split at every byte boundary by real chunking through Envoy
  (the mock writes two chunks with a pause between them), for OpenAI chat, the Responses API
  and Anthropic messages, and written to the access log.
* ``usage.include_stream_usage``: the router asks the provider for the usage of a stream
  (``stream_options.include_usage``) and removes the usage-only chunk from what the client
  gets, unless the client asked for it itself.
* ``usage.cost_header``: ``x-llm-router-cost`` on non-streaming answers of priced targets.
* The bundled access log: one JSON line per request the router handled, the client key only
  as a hash prefix.
"""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from harness import EnvoyRouter, chat

MOCK_KEY = "test-mock-key"
CHAT = "/v1/chat/completions"
PRICE = {"input": 2.0, "output": 8.0, "cached_input": 0.5}  # per 1M tokens

CONFIG = {
    "upstreams": {"a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}}},
    "models": {
        "priced": {"targets": [{"upstream": "a", "model": "m-priced", "price": PRICE}]},
        "free": {"targets": [{"upstream": "a", "model": "m-free"}]},
    },
    "default": {"use_model": "priced"},
    "usage": {"include_stream_usage": True, "cost_header": True},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG,
                     env={"MOCK_API_KEY": MOCK_KEY}, name="streaming") as r:
        yield r


def sse(*payloads: str, event: str | None = None) -> bytes:
    return b"".join((("event: %s\n" % event) if event else "").encode() + b"data: " + p.encode() + b"\n\n"
                    for p in payloads)


def chunk(content: str, **extra) -> str:
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    body.update(extra)
    return json.dumps(body, separators=(",", ":"))


USAGE = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38,
         "prompt_tokens_details": {"cached_tokens": 12},
         "completion_tokens_details": {"reasoning_tokens": 3}}
USAGE_EVENT = sse(json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                              "choices": [], "usage": USAGE}, separators=(",", ":")))
#: An OpenAI chat stream as sent with include_usage: content chunks, the usage-only chunk, [DONE].
CHAT_STREAM = sse(chunk("Hel", usage=None), chunk("lo", usage=None)) + USAGE_EVENT + sse("[DONE]")
CHAT_STREAM_WITHOUT_USAGE = CHAT_STREAM.replace(USAGE_EVENT, b"")

RESPONSES_STREAM = (
    sse('{"type":"response.created","response":{"id":"r1","status":"in_progress","usage":null}}',
        event="response.created")
    + sse('{"type":"response.output_text.delta","delta":"Hi"}', event="response.output_text.delta")
    + sse('{"type":"response.completed","response":{"id":"r1","status":"completed","output":[],'
          '"usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":8},"output_tokens":9,'
          '"output_tokens_details":{"reasoning_tokens":4},"total_tokens":49}}}', event="response.completed"))

ANTHROPIC_STREAM = (
    sse('{"type":"message_start","message":{"id":"m1","usage":{"input_tokens":21,'
        '"cache_creation_input_tokens":5,"cache_read_input_tokens":10,"output_tokens":1}}}',
        event="message_start")
    + sse('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
          event="content_block_delta")
    + sse('{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":6}}',
          event="message_delta")
    + sse('{"type":"message_stop"}', event="message_stop"))


def stream_request(router, body: dict, path: str = CHAT, headers=None):
    """Sends a streaming request; returns (response, [(monotonic arrival, bytes)], all bytes)."""
    pieces = []
    with httpx.Client(timeout=15) as client:
        with client.stream("POST", router.url + path, json=body, headers=headers or {}) as resp:
            for data in resp.iter_raw():
                pieces.append((time.monotonic(), data))
    return resp, pieces, b"".join(d for _, d in pieces)


def arrival_of(pieces, upto: int) -> float:
    """When the client had received at least ``upto`` bytes."""
    got = 0
    for at, data in pieces:
        got += len(data)
        if got >= upto:
            return at
    raise AssertionError("only %d of %d bytes arrived" % (got, upto))


def tokens(line: dict) -> tuple:
    return tuple(line[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens",
                                   "cached_tokens", "reasoning_tokens"))


# ---------------------------------------------------------------------------------------
# Streams pass as they are sent
# ---------------------------------------------------------------------------------------


@pytest.mark.core
@pytest.mark.parametrize("client_asks_usage", [True, False])
def test_chunks_reach_the_client_as_they_are_sent(router, mock_a, client_asks_usage):
    """Five chunks 150 ms apart: each reaches the client right after the mock wrote it. When
    the client asked for usage itself nothing is held, even a chunk that ends mid-event;
    otherwise (the router strips the usage chunk) whole events pass at once."""
    if client_asks_usage:
        cut = CHAT_STREAM.index(b"lo") + 1  # mid-event
        chunks = [CHAT_STREAM[:10], CHAT_STREAM[10:cut], CHAT_STREAM[cut:len(CHAT_STREAM) - 20],
                  CHAT_STREAM[len(CHAT_STREAM) - 20:len(CHAT_STREAM) - 5], CHAT_STREAM[len(CHAT_STREAM) - 5:]]
        extra = {"stream_options": {"include_usage": True}}
    else:
        events = [e + b"\n\n" for e in CHAT_STREAM.split(b"\n\n") if e]
        chunks = [events[0], events[1], b": keep-alive\n\n", events[2], events[3]]
        extra = {}
    mock_a.set_stream(chunks, delay_ms=150, times=1)
    resp, pieces, got = stream_request(router, chat("Hi", model="priced", stream=True, **extra))
    assert resp.status_code == 200
    assert resp.headers["x-llm-router-model"] == "m-priced"
    (record,) = mock_a.wait_for_streams(1)
    want = b"".join(chunks) if client_asks_usage else b"".join(chunks).replace(USAGE_EVENT, b"")
    assert got == want
    # Each chunk arrives within 50 ms of being written (generous for a shared machine; the
    # benchmark measures the real figure), i.e. long before the next one is written.
    sent = shown = 0
    for i, (written_at, length) in enumerate(record.chunks):
        sent += length
        visible = sent if client_asks_usage else len(b"".join(chunks[:i + 1]).replace(USAGE_EVENT, b""))
        if visible == shown:
            continue  # the removed usage chunk
        shown = visible
        lag = arrival_of(pieces, visible) - written_at
        assert -0.005 < lag < 0.05, "chunk %d arrived %.1f ms after it was written" % (i, lag * 1000)
    assert len(pieces) >= 4, "the stream arrived in %d pieces" % len(pieces)


def test_an_incomplete_event_is_held_only_while_stripping(router, mock_a):
    """When the router removes the usage chunk, the first half of an event waits for its
    second half (it may be the usage chunk); the client still gets every byte of it."""
    cut = CHAT_STREAM.index(b"lo") + 1
    mock_a.set_stream([CHAT_STREAM[:cut], CHAT_STREAM[cut:]], delay_ms=200, times=1)
    resp, pieces, got = stream_request(router, chat("Hi", model="priced", stream=True))
    (record,) = mock_a.wait_for_streams(1)
    assert got == CHAT_STREAM_WITHOUT_USAGE
    first_event_end = CHAT_STREAM.index(b"\n\n") + 2
    assert arrival_of(pieces, first_event_end) - record.chunks[0][0] < 0.05
    # The event cut in two arrives with the second chunk, not before.
    assert arrival_of(pieces, first_event_end + 1) >= record.chunks[1][0]


# ---------------------------------------------------------------------------------------
# Usage from streams split at every byte, through Envoy
# ---------------------------------------------------------------------------------------


def log_lines(router, request_ids: list[str], timeout: float = 10.0) -> list[dict]:
    """The access-log lines of these requests (by ``x-request-id``), in that order."""
    deadline = time.monotonic() + timeout
    while True:
        by_id = {line.get("request_id"): line for line in router.access_log(0, timeout=0)}
        if all(i in by_id for i in request_ids) or time.monotonic() > deadline:
            missing = [i for i in request_ids if i not in by_id]
            assert not missing, "no access-log line for %s" % missing[:5]
            return [by_id[i] for i in request_ids]
        time.sleep(0.1)


def split_everywhere(router, mock, stream: bytes, path: str, body: dict, step: int = 1):
    """Sends ``stream`` split in two at every ``step``-th boundary; returns the client bytes
    and the access-log lines of those requests."""
    cuts = list(range(1, len(stream), step))
    ids = ["split-%s-%d" % (path, k) for k in cuts]
    outputs = []
    for k, rid in zip(cuts, ids):
        mock.set_stream([stream[:k], stream[k:]], delay_ms=3, times=1)
        resp, _, got = stream_request(router, body, path=path, headers={"x-request-id": rid})
        assert resp.status_code == 200, (k, got)
        outputs.append(got)
    return cuts, outputs, log_lines(router, ids)


def test_chat_usage_at_every_split_and_the_usage_chunk_removed(router, mock_a):
    cuts, outputs, lines = split_everywhere(router, mock_a, CHAT_STREAM, CHAT,
                                            chat("Hi", model="priced", stream=True))
    for k, got, line in zip(cuts, outputs, lines):
        assert got == CHAT_STREAM_WITHOUT_USAGE, k
        assert tokens(line) == (31, 7, 38, 12, 3), (k, line)
        # 19 uncached and 12 cached prompt tokens, 7 completion tokens.
        assert line["cost"] == pytest.approx((19 * 2.0 + 12 * 0.5 + 7 * 8.0) / 1e6), (k, line)
    # Every request asked the provider for the usage.
    assert all(r.json()["stream_options"] == {"include_usage": True} for r in mock_a.requests)


@pytest.mark.parametrize("name,stream,path,want", [
    ("responses", RESPONSES_STREAM, "/v1/responses", (40, 9, 49, 8, 4)),
    ("anthropic", ANTHROPIC_STREAM, "/v1/messages", (36, 6, 42, 10, None)),
], ids=["responses", "anthropic"])
def test_other_stream_formats_at_every_split(router, mock_a, name, stream, path, want):
    body = {"model": "priced", "stream": True, "input": "Hi"} if name == "responses" else \
        {"model": "priced", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    cuts, outputs, lines = split_everywhere(router, mock_a, stream, path, body)
    for k, got, line in zip(cuts, outputs, lines):
        assert got == stream, k  # nothing removed from these
        assert tokens(line) == want, (k, line)
    # Not a chat or completions request: no stream_options added.
    assert all("stream_options" not in r.json() for r in mock_a.requests)


# ---------------------------------------------------------------------------------------
# include_usage, cost header
# ---------------------------------------------------------------------------------------


@pytest.mark.core
def test_the_router_asks_for_stream_usage_and_hides_the_extra_chunk(router, mock_a):
    """The mock's own stream (it honours include_usage): the provider got include_usage with
    the client's other stream options kept; the client got no usage chunk, the log the usage."""
    body = chat("Say hi", model="priced", stream=True, stream_options={"include_obfuscation": False})
    resp, _, got = stream_request(router, body, headers={"x-request-id": "hide-extra"})
    sent = mock_a.last_request.json()
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    events = [e for e in got.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    # (With include_usage, providers send `"usage": null` in every chunk; those stay.)
    assert all(json.loads(e[6:]).get("usage") is None for e in events[:-1]), events
    assert len(events) >= 4
    (line,) = log_lines(router, ["hide-extra"])
    assert line["completion_tokens"] > 0 and line["prompt_tokens"] > 0
    assert "x-llm-router-cost" not in resp.headers  # streams carry no cost header


@pytest.mark.core
def test_a_client_that_asks_for_usage_gets_it_untouched(router, mock_a):
    body = chat("Say hi", model="priced", stream=True, stream_options={"include_usage": True})
    _, _, got = stream_request(router, body)
    assert mock_a.last_request.json()["stream_options"] == {"include_usage": True}
    events = [json.loads(e[6:]) for e in got.decode().split("\n\n") if e and e != "data: [DONE]"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0


@pytest.mark.core
def test_cost_header_on_non_streaming_answers(router, mock_a):
    answer = {"id": "x", "object": "chat.completion", "model": "m-priced",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                        "prompt_tokens_details": {"cached_tokens": 400}}}
    mock_a.set_response(200, answer, times=1)
    resp = httpx.post(router.url + CHAT, json=chat("Hi", model="priced"), timeout=10)
    assert resp.status_code == 200
    assert resp.json() == answer  # the body is untouched
    want = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6
    assert float(resp.headers["x-llm-router-cost"]) == pytest.approx(want, abs=1e-10)
    # An unpriced target, and an error answer: no cost header.
    resp = httpx.post(router.url + CHAT, json=chat("Hi", model="free"), timeout=10)
    assert resp.status_code == 200 and "x-llm-router-cost" not in resp.headers
    mock_a.set_response(500, {"error": "boom"}, times=1)
    resp = httpx.post(router.url + CHAT, json=chat("Hi", model="priced"), timeout=10)
    assert resp.status_code == 500 and "x-llm-router-cost" not in resp.headers


# ---------------------------------------------------------------------------------------
# The bundled access log
# ---------------------------------------------------------------------------------------


@pytest.mark.core
def test_bundled_access_log_writes_one_line_per_request(bundled, mock_a, mock_b):
    key = "sk-client-secret-123"
    auth = {"authorization": "Bearer " + key}
    def rid(n):
        return {"x-request-id": "log-%d" % n}

    r1 = httpx.post(bundled.url + CHAT, json=chat("Write a python function", model="auto"),
                    headers=dict(auth, **rid(1)), timeout=10)
    r2 = httpx.post(bundled.url + CHAT, json=chat("Hi", model="fast", stream=True), headers=dict(auth, **rid(2)),
                    timeout=10)
    r3 = httpx.post(bundled.url + CHAT, json=chat("Hi", model="nope"), headers={"x-api-key": "other", **rid(3)},
                    timeout=10)
    r4 = httpx.get(bundled.url + "/v1/models", headers=rid(4), timeout=10)
    r5 = httpx.get(bundled.url + "/v1/files", headers=rid(5), timeout=10)  # not the router's: no line
    assert [r.status_code for r in (r1, r2, r3, r4, r5)] == [200, 200, 404, 200, 200]
    # A last request marks the end: r5's line, if there were one, would be written by then.
    httpx.get(bundled.url + "/v1/models/fast", headers=rid(6), timeout=10)
    routed, streamed, refused, models, _ = log_lines(bundled, ["log-%d" % n for n in (1, 2, 3, 4, 6)])
    assert "log-5" not in {line["request_id"] for line in bundled.access_log(0, timeout=0)}

    key_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    usage = r1.json()["usage"]
    assert routed["request_id"] == "log-1" == mock_b.requests[0].header("x-request-id")
    assert routed["client_key_id"] == key_id
    assert routed["endpoint"] == "chat" and routed["requested_model"] == "auto" and routed["stream"] is False
    assert (routed["task"], routed["rule"], routed["target"]) == ("coding", "rule:code-and-math", "mock-b/mock-large")
    assert (routed["upstream"], routed["model"]) == ("mock-b", "mock-large")
    assert routed["complexity"] == r1.headers["x-llm-router-complexity"]
    assert routed["tags"] == []
    assert routed["attempts"] == 1 and routed["status"] == 200
    assert 0 <= routed["ttfb_ms"] <= routed["latency_ms"] < 5000
    assert (routed["prompt_tokens"], routed["completion_tokens"], routed["total_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    # smart: $2.5 / $10 per million.
    assert routed["cost"] == pytest.approx((usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1e6)
    assert routed["time"].endswith("Z") and routed["time"][:4].isdigit()

    assert streamed["stream"] is True and streamed["target"] == "mock-a/mock-small"
    # The bundled config does not ask streams for usage: unknown, not guessed.
    assert streamed["prompt_tokens"] is None and streamed["cost"] is None

    assert refused["status"] == 404 and refused["error"] == "model_not_found"
    assert refused["requested_model"] == "nope" and "target" not in refused
    assert refused["client_key_id"] == hashlib.sha256(b"other").hexdigest()[:16]

    assert models["endpoint"] == "models" and models["status"] == 200

    with open(bundled.access_log_path, encoding="utf-8") as f:
        text = f.read()
    assert key not in text and "other\"" not in text
