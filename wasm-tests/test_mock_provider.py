"""Self-tests for mock_provider.py (pytest, standard library client only)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mock_provider import MockProvider, RecordedRequest  # noqa: E402


@pytest.fixture
def mock():
    p = MockProvider(name="mock-a", port=0).start()
    try:
        yield p
    finally:
        p.stop()


def _conn(p, timeout=5):
    return http.client.HTTPConnection("127.0.0.1", p.port, timeout=timeout)


def _post(p, path, body: bytes, headers=None):
    c = _conn(p)
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", path, body=body, headers=h)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def _sse_data(raw: bytes):
    """Split an SSE body into its data payloads."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


def test_chat_json_answer_and_recording(mock):
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "hi \\u00e9"}]}'
    status, hdrs, data = _post(mock, "/openai/v1/chat/completions?x=1", body,
                               {"X-Trace": "one", "Authorization": "Bearer sk-test"})
    assert status == 200
    assert hdrs["content-type"] == "application/json"
    assert hdrs["x-mock-upstream"] == "mock-a"
    assert hdrs["x-mock-model"] == "gpt-4o-mini"
    assert hdrs["x-mock-path"] == "/openai/v1/chat/completions?x=1"
    obj = json.loads(data)
    assert obj["object"] == "chat.completion"
    assert obj["id"].startswith("chatcmpl-mock-")
    assert obj["model"] == "gpt-4o-mini"
    content = obj["choices"][0]["message"]["content"]
    assert obj["choices"][0]["message"]["role"] == "assistant"
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert "mock-a" in content and "model=gpt-4o-mini" in content
    assert "path=/openai/v1/chat/completions?x=1" in content
    u = obj["usage"]
    assert u["prompt_tokens"] == (len(body) + 3) // 4
    assert u["completion_tokens"] == len(content.split())
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]

    reqs = mock.requests
    assert len(reqs) == 1
    r = reqs[0]
    assert isinstance(r, RecordedRequest)
    assert r.method == "POST"
    assert r.path == "/openai/v1/chat/completions?x=1"
    assert r.body == body  # exact bytes, whitespace preserved
    assert r.header("x-trace") == "one"
    assert r.header("AUTHORIZATION") == "Bearer sk-test"
    assert r.header("missing") is None
    assert r.header("content-length") == str(len(body))
    names = [k.lower() for k, _ in r.headers]
    assert names.index("x-trace") < names.index("authorization")  # received order
    assert r.json()["model"] == "gpt-4o-mini"

    mock.clear()
    assert mock.requests == []


def test_streaming_sse_with_include_usage(mock):
    body = json.dumps({"model": "m1", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    c = _conn(mock)
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("content-type") == "text/event-stream"
    assert r.getheader("transfer-encoding") == "chunked"
    assert r.getheader("content-length") is None
    assert r.getheader("x-mock-model") == "m1"
    raw = r.read()  # http.client de-chunks
    c.close()

    payloads = _sse_data(raw)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(x) for x in payloads[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "mock-a received model=m1 path=/v1/chat/completions"
    finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    last = events[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == len(text.split())
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]


def test_streaming_without_include_usage_has_no_usage_chunk(mock):
    body = json.dumps({"model": "m1", "stream": True}).encode()
    status, hdrs, raw = _post(mock, "/v1/chat/completions", body)
    assert status == 200
    payloads = _sse_data(raw)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(x) for x in payloads[:-1]]
    assert all(e["choices"] for e in events)
    assert all("usage" not in e for e in events)


def test_raw_chunked_wire_format(mock):
    """The streamed answer is well-formed chunked encoding on the wire."""
    body = json.dumps({"model": "m", "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", mock.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    buf = b""
    while not buf.endswith(b"0\r\n\r\n"):
        d = s.recv(65536)
        assert d, "connection closed early"
        buf += d
    s.close()
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    decoded = b""
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            assert rest == b"\r\n"
            break
        decoded += rest[:size]
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]
    assert decoded.endswith(b"data: [DONE]\n\n")


def test_chunked_request_body_accepted(mock):
    parts = [b'{"model": "chunky", ', b'"messages": []', b"}"]
    c = _conn(mock)
    c.request("POST", "/v1/chat/completions", body=iter(parts),
              headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
              encode_chunked=True)
    r = c.getresponse()
    obj = json.loads(r.read())
    assert r.status == 200
    assert obj["model"] == "chunky"
    # connection still usable after a chunked request
    c.request("GET", "/healthz")
    r2 = c.getresponse()
    assert r2.status == 200 and json.loads(r2.read())["path"] == "/healthz"
    c.close()
    rec = mock.requests[0]
    assert rec.body == b"".join(parts)
    assert rec.header("transfer-encoding") == "chunked"


def test_set_response_override(mock):
    mock.set_response(status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "1"})
    for _ in range(2):
        status, hdrs, data = _post(mock, "/v1/chat/completions", b'{"model":"x"}')
        assert status == 429
        assert hdrs["retry-after"] == "1"
        assert hdrs["x-mock-upstream"] == "mock-a"
        assert hdrs["content-type"] == "application/json"
        assert json.loads(data) == {"error": {"message": "slow down"}}
    assert len(mock.requests) == 2  # still recorded

    mock.reset_response()
    status, _, data = _post(mock, "/v1/chat/completions", b'{"model":"x"}')
    assert status == 200 and json.loads(data)["object"] == "chat.completion"

    mock.set_response(status=500, body="upstream exploded", headers=[("content-type", "text/plain")], times=1)
    status, hdrs, data = _post(mock, "/v1/chat/completions", b'{"model":"x"}')
    assert status == 500 and data == b"upstream exploded" and hdrs["content-type"] == "text/plain"
    status, _, _ = _post(mock, "/v1/chat/completions", b'{"model":"x"}')
    assert status == 200


def test_non_json_body(mock):
    body = b"\xff\xfe not json at all"
    status, hdrs, data = _post(mock, "/v1/chat/completions", body, {"Content-Type": "text/plain"})
    assert status == 200
    obj = json.loads(data)
    assert obj["mock"] == "mock-a"
    assert obj["note"] == "body was not JSON"
    assert obj["bytes"] == len(body)
    assert mock.requests[0].body == body


def test_keep_alive_two_requests_one_connection(mock):
    c = _conn(mock)
    c.request("POST", "/v1/chat/completions", body=b'{"model":"a"}')
    r1 = c.getresponse()
    b1 = json.loads(r1.read())
    sock1 = c.sock
    assert sock1 is not None  # server did not close
    c.request("POST", "/v1/chat/completions", body=b'{"model":"b"}')
    r2 = c.getresponse()
    b2 = json.loads(r2.read())
    assert c.sock is sock1  # same TCP connection reused
    c.close()
    assert (b1["model"], b2["model"]) == ("a", "b")
    assert b1["id"] != b2["id"]
    assert len(mock.wait_for_requests(2)) == 2


def test_other_endpoints(mock):
    _, _, d = _post(mock, "/v1/completions", b'{"model":"c","prompt":"p"}')
    o = json.loads(d)
    assert o["object"] == "text_completion" and "model=c" in o["choices"][0]["text"]

    _, _, d = _post(mock, "/v1/responses", b'{"model":"r","input":"hi"}')
    o = json.loads(d)
    assert o["object"] == "response"
    assert o["output"][0]["content"][0]["type"] == "output_text"
    assert "model=r" in o["output"][0]["content"][0]["text"]
    assert o["usage"]["total_tokens"] == o["usage"]["input_tokens"] + o["usage"]["output_tokens"]

    _, _, d = _post(mock, "/v1/embeddings", b'{"model":"e","input":["a","b","c"]}')
    o = json.loads(d)
    assert o["object"] == "list" and len(o["data"]) == 3 and o["data"][2]["index"] == 2
    assert o["data"][0]["embedding"] == [0.1, 0.2, 0.3]

    _, _, d = _post(mock, "/v1/messages", b'{"model":"claude-x","max_tokens":5,"messages":[]}')
    o = json.loads(d)
    assert o["type"] == "message" and o["stop_reason"] == "end_turn"
    assert "model=claude-x" in o["content"][0]["text"]
    assert set(o["usage"]) == {"input_tokens", "output_tokens"}

    c = _conn(mock)
    c.request("GET", "/v1/models")
    r = c.getresponse()
    assert r.status == 200
    assert json.loads(r.read()) == {"mock": "mock-a", "method": "GET", "path": "/v1/models"}
    c.close()


def test_model_header_sanitised(mock):
    status, hdrs, data = _post(mock, "/v1/chat/completions", json.dumps({"model": "bad\r\nx: y\u00e9"}).encode())
    assert status == 200
    assert hdrs["x-mock-model"] == "badx: y"
    assert json.loads(data)["model"] == "bad\r\nx: y\u00e9"


def test_stop_closes_keepalive_connections():
    p = MockProvider(name="mock-b", port=0).start()
    c = _conn(p)
    c.request("GET", "/healthz")
    c.getresponse().read()
    port = p.port
    p.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        c.request("GET", "/healthz")
        c.getresponse().read()
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_program_mode_prints_line_and_exits_on_sigterm():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_provider.py")
    proc = subprocess.Popen([sys.executable, script, "--name", "mock-p", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("mock-provider mock-p listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("POST", "/v1/chat/completions", body=b'{"model":"z"}')
        r = c.getresponse()
        assert r.status == 200 and r.getheader("x-mock-upstream") == "mock-p"
        r.read()
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr.read() == ""  # quiet without --verbose
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# Scripted streams (set_stream)
# ---------------------------------------------------------------------------


def _read_head(s, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed before the response head"
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def _read_chunks(s, rest):
    """Reads chunked frames off ``s``: [(data, monotonic time the frame was complete,
    recv number)] and the wire bytes, up to and including the zero-length chunk."""
    frames, wire, recvs = [], rest, 0
    buf = rest
    while True:
        j = buf.find(b"\r\n")
        if j >= 0:
            size = int(buf[:j], 16)
            end = j + 2 + size + 2
            if len(buf) >= end:
                assert buf[j + 2 + size:end] == b"\r\n"
                if size == 0:
                    assert buf[end:] == b""
                    return frames, wire
                frames.append((buf[j + 2:j + 2 + size], time.monotonic(), recvs))
                buf = buf[end:]
                continue
        d = s.recv(65536)
        assert d, "connection closed inside the chunked body"
        recvs += 1
        buf += d
        wire += d


SCRIPT = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"choices":[{"index":0,"del',  # an event split across two chunks
    b'ta":{"content":"lo \xc3\xa9"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3}}\n\n',
    b"data: [DONE]\n\n",
]


def test_set_stream_chunks_arrive_separately_in_time_and_exact(mock):
    delay_ms = 80
    mock.set_stream(SCRIPT, delay_ms=delay_ms, headers={"x-extra": "1"})
    body = b'{"model":"m-s","stream":true}'
    s = socket.create_connection(("127.0.0.1", mock.port), timeout=5)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        head, rest = _read_head(s)
        t_head = time.monotonic()
        frames, wire = _read_chunks(s, rest)
    finally:
        s.close()
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    h = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    assert h["content-type"] == "text/event-stream"
    assert h["transfer-encoding"] == "chunked"
    assert "content-length" not in h
    assert h["x-mock-upstream"] == "mock-a" and h["x-mock-model"] == "m-s"
    assert h["x-mock-path"] == "/v1/chat/completions" and h["x-extra"] == "1"
    # The head came at once, not with the (delayed) later chunks.
    assert t_head - t0 < delay_ms / 1000.0

    # Exact bytes, one chunked frame per scripted chunk, each in a recv of its own.
    assert [f[0] for f in frames] == SCRIPT
    assert wire == b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in SCRIPT) + b"0\r\n\r\n"
    assert len({f[2] for f in frames}) == len(SCRIPT)

    (log,) = mock.wait_for_streams(1)
    assert log.done and log.error is None
    assert log.request_n == int(h["x-mock-request-n"])
    assert [n for _, n in log.chunks] == [len(c) for c in SCRIPT]
    assert t0 <= log.headers_at <= log.chunks[0][0]
    sent = [t for t, _ in log.chunks]
    got = [t for _, t, _ in frames]
    for i in range(1, len(sent)):
        assert sent[i] - sent[i - 1] >= delay_ms / 1000.0 * 0.95, sent
        assert got[i] - got[i - 1] >= delay_ms / 1000.0 * 0.5, got
    for ts, tr in zip(sent, got):
        # received before the next chunk was due: not held back or coalesced
        assert 0 <= tr - ts < delay_ms / 1000.0, (ts, tr)
    # The request was recorded as usual.
    assert mock.requests[0].body == body


def test_set_stream_times_status_keepalive_and_reset(mock):
    mock.set_stream([b"data: 1\n\n", "data: \u00e9\n\n"], times=2, status=503,
                    headers=[("content-type", "text/plain"), ("Content-Length", "99")])
    c = _conn(mock)
    for i in range(2):  # both scripted, on one keep-alive connection
        c.request("POST", "/v1/chat/completions", body=b'{"model":"x"}')
        r = c.getresponse()
        assert r.status == 503
        assert r.getheader("content-type") == "text/plain"
        assert r.getheader("content-length") is None  # framing is the mock's own
        assert r.read() == "data: 1\n\ndata: \u00e9\n\n".encode()
    c.request("POST", "/v1/chat/completions", body=b'{"model":"x"}')  # back to normal
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["object"] == "chat.completion"
    c.close()
    logs = mock.wait_for_streams(2)
    assert len(logs) == 2 and all(x.done for x in logs)
    assert len(mock.requests) == 3

    mock.set_stream([b"data: x\n\n"])
    mock.set_response(418, {"teapot": True}, times=1)  # replaces the stream
    assert _post(mock, "/v1/chat/completions", b"{}")[0] == 418
    mock.set_stream([b"data: x\n\n"])
    mock.reset_response()
    assert _post(mock, "/v1/chat/completions", b"{}")[0] == 200
    mock.clear()
    assert mock.stream_log == [] and mock.requests == []
    with pytest.raises(ValueError):
        mock.set_stream([b"ok", b""])


def test_set_stream_client_gone_is_logged(mock):
    mock.set_stream([b"data: %d\n\n" % i for i in range(200)], delay_ms=5, times=1)
    s = socket.create_connection(("127.0.0.1", mock.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    _read_head(s)
    s.close()
    (log,) = mock.wait_for_streams(1, timeout=10)
    assert not log.done and log.error
    assert len(log.chunks) < 200
    # The mock still answers.
    assert _post(mock, "/v1/chat/completions", b'{"model":"y"}')[0] == 200
