"""End-to-end transport tests: large and fragmented bodies, chunked encoding, HTTP/2,
keep-alive, Unicode, streaming responses and concurrency, through the bundled Envoy.

Whatever the framing, the upstream must receive the client's body byte for byte except the
`model` value, with a correct content-length (or chunked framing), and the routing and
diagnostic headers must be those of the request's own routing.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import chat, chunked, jdump, raw_http, split_pieces  # noqa: E402

MOCK_KEY = "test-mock-key"
CHAT = "/v1/chat/completions"
JSON_CT = {"content-type": "application/json"}

# Explicit aliases of the bundled config: no rule names a model, so rules (which apply only to
# auto / omitted models) never interfere and the routing is fixed.
FAST = ("mock-a", "mock-small", "/v1/chat/completions")
SMART = ("mock-b", "mock-large", "/openai/v1/chat/completions")


def expected_upstream_body(body: bytes, alias: str, model: str) -> bytes:
    """The client's bytes with only the model value replaced."""
    old = b'"model":"%s"' % alias.encode()
    assert body.count(old) == 1
    return body.replace(old, b'"model":"%s"' % model.encode(), 1)


def assert_routed(headers, target, rule=None) -> None:
    upstream, model, _ = target
    pairs = headers if isinstance(headers, list) else headers.items()
    h = {k.lower(): v for k, v in pairs}
    assert h.get("x-llm-router-upstream") == upstream, h
    assert h.get("x-llm-router-model") == model, h
    if rule is not None:
        assert h.get("x-llm-router-rule") == rule, h


def assert_upstream_request(rec, target, body: bytes) -> None:
    """What the provider got: the chosen path, its credential only, the expected bytes."""
    upstream, _, path = target
    assert rec.method == "POST"
    assert rec.path == path, rec.path
    assert rec.body == body, "upstream body differs (%d vs %d bytes)" % (len(rec.body), len(body))
    cl = rec.header("content-length")
    if cl is not None:
        assert int(cl) == len(body), (cl, len(body))
    else:
        assert (rec.header("transfer-encoding") or "").lower() == "chunked", rec.headers
    if upstream == "mock-a":
        assert rec.header("authorization") == "Bearer " + MOCK_KEY
        assert rec.header("x-api-key") is None
    else:
        assert rec.header("x-api-key") == MOCK_KEY
        assert rec.header("authorization") is None
    assert rec.header("x-llm-router-cluster") is None, "the routing header must not leak upstream"


def head(length=None, is_chunked=False, keep_alive=False, extra=b"") -> bytes:
    h = b"POST /v1/chat/completions HTTP/1.1\r\nHost: llm.test\r\nContent-Type: application/json\r\n"
    h += b"Authorization: Bearer client-own-secret\r\n"
    if length is not None:
        h += b"Content-Length: %d\r\n" % length
    if is_chunked:
        h += b"Transfer-Encoding: chunked\r\n"
    if not keep_alive:
        h += b"Connection: close\r\n"
    return h + extra + b"\r\n"


def filler(n: int, seed: int = 7) -> str:
    """About n characters of varied text (words, digits, punctuation, escapes-to-be)."""
    rnd = random.Random(seed)
    words = ["alpha", "beta", "quote\"d", "back\\slash", "tab\there", "line\nbreak", "42", "3.14",
             "{brace}", "[bracket]", "comma,", "colon:", "unicodé", "ünïcödé", "数据", "🙂"]
    out, size = [], 0
    while size < n:
        w = rnd.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


# ---------------------------------------------------------------------------
# Large and fragmented bodies
# ---------------------------------------------------------------------------


def test_one_mib_body_routed_byte_identical(bundled, mock_a, mock_b):
    """A 1 MiB chat body is routed; upstream bytes equal the client's except the model, content-length right."""
    body = jdump({"model": "fast", "temperature": 0.25, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": filler(1024 * 1024)}], "max_tokens": 64, "user": "u-1"})
    assert len(body) > 1024 * 1024
    resp = httpx.post(bundled.url + CHAT, content=body, headers=JSON_CT, timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    assert_routed(resp.headers, FAST, "model:fast")
    (rec,) = mock_a.requests
    expected = expected_upstream_body(body, "fast", "mock-small")
    assert_upstream_request(rec, FAST, expected)
    assert rec.header("content-length") == str(len(expected))
    assert mock_b.requests == []


def _many_writes_body() -> bytes:
    return jdump(chat(filler(24000, seed=3), model="smart", stream=False, n=1))


def test_body_in_200_tcp_writes_with_content_length(bundled, mock_a, mock_b):
    """A body sent as 200 separate TCP writes (content-length framing) is routed with the right bytes."""
    body = _many_writes_body()
    pieces = split_pieces(body, 200)
    assert len(pieces) == 200
    resp = raw_http(bundled.port, head(len(body)), pieces, delay=0.002)
    assert resp.status_code == 200, resp.content[:300]
    assert_routed(resp.header_list, SMART, "model:smart")
    (rec,) = mock_b.requests
    expected = expected_upstream_body(body, "smart", "mock-large")
    assert_upstream_request(rec, SMART, expected)
    assert rec.header("content-length") == str(len(expected))
    assert mock_a.requests == []


def test_body_in_200_chunks_with_chunked_encoding(bundled, mock_a, mock_b):
    """A body sent as 200 HTTP/1.1 chunks in separate writes (no content-length) is routed intact."""
    body = _many_writes_body()
    pieces = chunked(split_pieces(body, 200))
    assert len(pieces) == 201
    resp = raw_http(bundled.port, head(is_chunked=True), pieces, delay=0.002)
    assert resp.status_code == 200, resp.content[:300]
    assert_routed(resp.header_list, SMART, "model:smart")
    (rec,) = mock_b.requests
    assert_upstream_request(rec, SMART, expected_upstream_body(body, "smart", "mock-large"))
    assert mock_a.requests == []


def test_chunk_boundaries_inside_utf8_and_escapes(bundled, mock_a, mock_b):
    """Chunks cut inside multi-byte UTF-8 characters and JSON escapes are reassembled exactly."""
    body = jdump(chat("数据🙂é\\\"\u00e9\n" * 200, model="fast"))
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]  # 7 bytes: splits 3- and 4-byte chars
    resp = raw_http(bundled.port, head(is_chunked=True), chunked(pieces))
    assert resp.status_code == 200, resp.content[:300]
    (rec,) = mock_a.requests
    assert_upstream_request(rec, FAST, expected_upstream_body(body, "fast", "mock-small"))


# ---------------------------------------------------------------------------
# Protocols and connections
# ---------------------------------------------------------------------------


def test_http2_prior_knowledge_routed(bundled, mock_a, mock_b):
    """An HTTP/2 (h2c prior knowledge) client is routed per request, with diagnostics and credentials right."""
    bodies = [jdump(chat("hello over h2", model="fast")), jdump(chat("and again", model="smart")),
              jdump(chat("Fix this:\n```python\ndef f(:\n```"))]
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        resps = [c.post(bundled.url + CHAT, content=b,
                        headers={**JSON_CT, "authorization": "Bearer client-own-secret",
                                 "x-llm-router-cluster": "mock-a"}) for b in bodies]
    for r in resps:
        assert r.http_version == "HTTP/2", r.http_version
        assert r.status_code == 200, r.text
    assert_routed(resps[0].headers, FAST, "model:fast")
    assert_routed(resps[1].headers, SMART, "model:smart")
    assert_routed(resps[2].headers, SMART, "rule:code-and-math")
    assert resps[2].headers["x-llm-router-task"] == "coding"
    a_reqs, b_reqs = mock_a.requests, mock_b.requests
    assert len(a_reqs) == 1 and len(b_reqs) == 2
    assert_upstream_request(a_reqs[0], FAST, expected_upstream_body(bodies[0], "fast", "mock-small"))
    assert_upstream_request(b_reqs[0], SMART, expected_upstream_body(bodies[1], "smart", "mock-large"))
    assert_upstream_request(b_reqs[1], SMART, expected_upstream_body(bodies[2], "auto", "mock-large"))
    for r in a_reqs + b_reqs:
        assert "client-own-secret" not in json.dumps(r.headers)


def test_http2_concurrent_streams_on_one_connection(bundled, mock_a, mock_b):
    """Interleaved HTTP/2 streams on one connection are each routed by their own body."""
    n = 12
    markers = [uuid.uuid4().hex for _ in range(n)]
    with httpx.Client(http1=False, http2=True, timeout=15) as c:
        def one(i):
            alias = "fast" if i % 2 == 0 else "smart"
            return c.post(bundled.url + CHAT, content=jdump(chat("marker " + markers[i], model=alias)),
                          headers=JSON_CT)
        with ThreadPoolExecutor(max_workers=6) as pool:
            resps = list(pool.map(one, range(n)))
    for i, r in enumerate(resps):
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        target = FAST if i % 2 == 0 else SMART
        assert_routed(r.headers, target)
        assert r.json()["model"] == target[1]
    got_a = {q.json()["messages"][0]["content"].split()[1] for q in mock_a.requests}
    got_b = {q.json()["messages"][0]["content"].split()[1] for q in mock_b.requests}
    assert got_a == set(markers[0::2]) and got_b == set(markers[1::2])


def _read_response(sock, buf: bytes):
    """One content-length framed HTTP/1.1 response from a keep-alive socket."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before a response head"
        buf += data
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:])]
    n = int(dict(headers)["content-length"])
    while len(rest) < n:
        data = sock.recv(65536)
        assert data, "connection closed inside a response body"
        rest += data
    return status, headers, rest[:n], rest[n:]


def test_http11_keepalive_requests_routed_independently(bundled, mock_a, mock_b):
    """Several requests on one HTTP/1.1 keep-alive connection are each routed on their own."""
    plan = [("fast", FAST, "model:fast"), ("smart", SMART, "model:smart"),
            ("auto", FAST, "default"), ("fast", FAST, "model:fast"), ("smart", SMART, "model:smart")]
    bodies = [jdump(chat("keep-alive request %d" % i, model=alias)) for i, (alias, _, _) in enumerate(plan)]
    with socket.create_connection(("127.0.0.1", bundled.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for body, (alias, target, rule) in zip(bodies, plan):
            s.sendall(head(len(body), keep_alive=True) + body)
            status, headers, content, buf = _read_response(s, buf)
            assert status == 200, content
            assert dict(headers).get("connection") != "close"
            assert_routed(headers, target, rule)
            assert json.loads(content)["model"] == target[1]
    a_reqs, b_reqs = mock_a.requests, mock_b.requests
    assert [q.body for q in a_reqs] == [expected_upstream_body(bodies[i], plan[i][0], "mock-small") for i in (0, 2, 3)]
    assert [q.body for q in b_reqs] == [expected_upstream_body(bodies[i], plan[i][0], "mock-large") for i in (1, 4)]


# ---------------------------------------------------------------------------
# Unicode
# ---------------------------------------------------------------------------

UNICODE_TEXT = (
    "漢字とかなカナ、한국어 — 中文提示。"          # CJK
    "🙂👩‍👩‍👧‍👦🏳️‍🌈🇫🇷"                             # emoji, ZWJ sequences, flags
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353"   # combining characters
    "שָׁלוֹם مرحبا \u200f\u200b\ufeff"               # RTL, zero-width, BOM
    "\U0001d54f\U00010348 \u2028\u2029"              # astral plane, JS line separators
)


def test_unicode_prompt_bytes_preserved(bundled, mock_a, mock_b):
    """Raw UTF-8 prompts (CJK, emoji, combining, RTL, astral) reach the upstream byte for byte."""
    body = jdump({"model": "fast", "messages": [{"role": "user", "content": UNICODE_TEXT}],
                  "metadata": {"标签": "值", "emoji": "🚀"}})
    resp = httpx.post(bundled.url + CHAT, content=body, headers=JSON_CT, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_routed(resp.headers, FAST, "model:fast")
    (rec,) = mock_a.requests
    assert_upstream_request(rec, FAST, expected_upstream_body(body, "fast", "mock-small"))
    assert rec.json()["messages"][0]["content"] == UNICODE_TEXT


def test_escaped_surrogate_pairs_preserved_as_sent(bundled, mock_a, mock_b):
    """`\\u`-escaped surrogate pairs and escapes are forwarded exactly as written, not re-encoded."""
    body = (b'{ "messages" : [ {"role":"user","content":"\\ud83d\\ude00 \\u4e2d\\u6587 \\u00e9\\u0301 '
            b'\\uD834\\uDD1E \\"q\\" \\/ \\t"} ],\n  "model" : "fast" , "n":1.0e0 }')
    assert json.loads(body)["messages"][0]["content"].startswith("\U0001F600 中文")
    resp = httpx.post(bundled.url + CHAT, content=body, headers=JSON_CT, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_routed(resp.headers, FAST, "model:fast")
    (rec,) = mock_a.requests
    expected = body.replace(b'"model" : "fast"', b'"model" : "mock-small"', 1)
    assert expected != body
    assert_upstream_request(rec, FAST, expected)


def test_escaped_model_alias_is_recognised(bundled, mock_a, mock_b):
    """A model alias written with `\\u` escapes (`"f\\u0061st"`) routes like `"fast"`."""
    body = b'{"model":"f\\u0061st","messages":[{"role":"user","content":"hi"}]}'
    resp = httpx.post(bundled.url + CHAT, content=body, headers=JSON_CT, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_routed(resp.headers, FAST, "model:fast")
    (rec,) = mock_a.requests
    assert_upstream_request(rec, FAST, b'{"model":"mock-small","messages":[{"role":"user","content":"hi"}]}')


def test_chinese_coding_prompt_with_code_fence_classified_coding(bundled, mock_a, mock_b):
    """A coding question in Chinese with a code fence is classified `coding` and routed by code-and-math."""
    prompt = "请帮我修复这个函数的错误：\n```python\ndef add(a, b):\n    return a - b\n```\n谢谢！🙏"
    body = jdump(chat(prompt))
    resp = httpx.post(bundled.url + CHAT, content=body, headers=JSON_CT, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_routed(resp.headers, SMART, "rule:code-and-math")
    assert resp.headers["x-llm-router-task"] == "coding"
    (rec,) = mock_b.requests
    assert_upstream_request(rec, SMART, expected_upstream_body(body, "auto", "mock-large"))
    assert mock_a.requests == []


def test_chinese_small_talk_stays_general(bundled, mock_a, mock_b):
    """A short Chinese greeting (no code) is `general` and goes to the default (the control case)."""
    resp = httpx.post(bundled.url + CHAT, content=jdump(chat("你好，今天天气怎么样？😊")), headers=JSON_CT, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_routed(resp.headers, FAST, "default")
    assert resp.headers["x-llm-router-task"] == "general"
    assert len(mock_a.requests) == 1 and mock_b.requests == []


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


def _sse_data(raw: bytes) -> list[str]:
    text = raw.decode("utf-8")
    assert "\r" not in text
    events = [e for e in text.split("\n\n") if e]
    out = []
    for e in events:
        lines = e.split("\n")
        assert all(l.startswith("data: ") for l in lines), e
        out.append("\n".join(l[len("data: "):] for l in lines))
    return out


def test_streaming_sse_arrives_intact_and_incrementally(bundled, mock_a, mock_b):
    """A `stream: true` request gets the mock's SSE events, all of them and `[DONE]`, as they are sent."""
    body = jdump(chat("stream please", model="fast", stream=True, stream_options={"include_usage": True}))
    mock_a.stream_delay_ms = 60
    try:
        arrivals = []
        raw = b""
        t0 = time.monotonic()
        with httpx.stream("POST", bundled.url + CHAT, content=body, headers=JSON_CT, timeout=15) as resp:
            assert resp.status_code == 200
            headers = resp.headers
            for chunk in resp.iter_raw():
                arrivals.append(time.monotonic() - t0)
                raw += chunk
    finally:
        mock_a.stream_delay_ms = 0
    assert headers["content-type"].startswith("text/event-stream")
    assert_routed(headers, FAST, "model:fast")
    assert headers["x-llm-router-task"] and headers["x-llm-router-complexity"]
    data = _sse_data(raw)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["model"] == "mock-small" and c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "mock-a received model=mock-small path=/v1/chat/completions"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    # Not buffered: the first bytes come well before the last (events are 60 ms apart).
    assert len(arrivals) > 1 and arrivals[-1] - arrivals[0] > 0.2, arrivals
    (rec,) = mock_a.requests
    assert_upstream_request(rec, FAST, expected_upstream_body(body, "fast", "mock-small"))


def test_streaming_over_http2(bundled, mock_a, mock_b):
    """SSE through an HTTP/2 client arrives complete with the diagnostic headers."""
    body = jdump(chat("stream please", model="smart", stream=True))
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        with c.stream("POST", bundled.url + CHAT, content=body, headers=JSON_CT) as resp:
            assert resp.http_version == "HTTP/2" and resp.status_code == 200
            raw = resp.read()
    assert_routed(resp.headers, SMART, "model:smart")
    data = _sse_data(raw)
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1])
    assert text == "mock-b received model=mock-large path=/openai/v1/chat/completions"


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------


def test_fifty_concurrent_requests_from_ten_threads(bundled, mock_a, mock_b):
    """50 requests from 10 threads are each routed by their own body, none lost or mixed up."""
    n = 50
    aliases = ["fast", "smart", "auto", "fast", "smart"]
    targets = {"fast": FAST, "smart": SMART, "auto": FAST}
    markers = ["m%02d-%s" % (i, uuid.uuid4().hex[:12]) for i in range(n)]
    bodies = [jdump(chat("request %s %s" % (markers[i], "please say hello politely. " * (1 + i)),
                         model=aliases[i % len(aliases)])) for i in range(n)]
    local = threading.local()

    def one(i):
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=20)
        r = local.client.post(bundled.url + CHAT, content=bodies[i], headers=JSON_CT)
        return i, r.status_code, dict(r.headers), r.content

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(n)))
    for i, status, headers, content in results:
        alias = aliases[i % len(aliases)]
        target = targets[alias]
        assert status == 200, (i, content[:200])
        assert_routed(headers, target, "default" if alias == "auto" else "model:" + alias)
        assert json.loads(content)["choices"][0]["message"]["content"] == \
            "%s received model=%s path=%s" % target
    by_marker = {}
    for name, mock in (("mock-a", mock_a), ("mock-b", mock_b)):
        for q in mock.requests:
            marker = q.json()["messages"][0]["content"].split()[1]
            assert marker not in by_marker, "request %s forwarded twice" % marker
            by_marker[marker] = (name, q)
    assert len(by_marker) == n
    for i in range(n):
        alias = aliases[i % len(aliases)]
        target = targets[alias]
        name, q = by_marker[markers[i]]
        assert name == target[0], (i, name)
        assert_upstream_request(q, target, expected_upstream_body(bodies[i], alias, target[1]))
