"""End-to-end: header values that are not UTF-8, and other odd bytes (issue 11), through the real
Envoy on two workers.

A request header value that is not valid UTF-8 (``User-Agent: \\xff``, on any path, without a
key) used to make the filter panic inside the proxy-wasm SDK (its map getters decode values as
UTF-8 and unwrap); the VM trapped and, FAIL_CLOSED, that worker answered 503 to everything after.
An upstream response header (``x-odd: \\xff\\xfe``) did the same. Here:

* What Envoy 1.40 itself lets through to the filter, measured (and asserted below, in
  ``test_bytes_envoy_refuses_itself``): in request and response header values and trailers,
  over HTTP/1.1 and HTTP/2, every byte but 0x00-0x08, 0x0a-0x1f and 0x7f, i.e. HTAB, 0x20-0x7e
  and all of 0x80-0xff. Envoy answers the others itself (HTTP/1.1 request: its own 400;
  HTTP/2 request: the connection is closed; upstream response: 502), except a bare CR in an
  HTTP/1.1 value, which it drops (``a\\ra`` arrives as ``aa``).
* Odd values (``ODD``: single high bytes, overlong and truncated sequences, UTF-8-encoded
  surrogates, code points beyond U+10FFFF, Latin-1, tabs and obs-text, and valid UTF-8 for
  contrast), long values near Envoy's header size limits, many headers, in request headers,
  response headers and response trailers (HTTP/1.1 chunked and HTTP/2), on every routed endpoint
  (streaming too), a passed-through path and ``GET /v1/models``, with and without ``clients``.
* A header the router does not need reaches the upstream (or the client) byte for byte as sent.
* A non-UTF-8 value in a header the router needs (a credential header when ``clients`` is
  configured, the clients' identity header, a header a rule matches) gets the router's
  OpenAI-shaped 400 naming the header, and reaches no provider.
* Without ``clients`` the client's credential headers are replaced by the provider's key: their
  odd bytes never reach a provider.
* After every odd request, 50 ordinary requests on 50 connections (so on every worker, checked
  with Envoy's per-worker stats) all succeed, and Envoy's log has no ``panicked`` line.

Each kind of router (without and with ``clients``) is one Envoy, reused from test to test while
it stays sound; one whose log shows a panic (or that died) is replaced before the next test, so
that each test's result is its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Optional

import h2.config
import h2.connection
import h2.events
import pytest

from harness import EnvoyRouter, _cluster, _hcm, bundled_plugin_config, build_config

MOCK_KEY = "test-mock-key"  # conftest's MOCK_API_KEY: the providers' own key
CLIENT_KEY = "sk-test-odd-" + secrets.token_hex(12)
IDENTITY_HEADER = "x-client-name"
RULE_HEADER = "x-tenant"
CONCURRENCY = 2
#: Ordinary requests after each odd one, each on its own connection.
FOLLOW_UPS = 50

# ---------------------------------------------------------------------------
# The odd values
# ---------------------------------------------------------------------------

HIGH = bytes(range(0x80, 0x100))

#: (header name, value): values Envoy hands to the filter (no byte below 0x20 but HTAB, no DEL;
#: no leading or trailing whitespace, which is not part of a field value).
ODD: list[tuple[bytes, bytes]] = [
    (b"user-agent", b"\xff"),  # the issue's example
    (b"x-odd-fffe", b"\xff\xfe"),
    (b"x-odd-high", HIGH),  # every byte 0x80-0xff once
    (b"x-odd-lone-continuation", b"\x80"),
    (b"x-odd-latin1", b"caf\xe9 na\xefve \xa9 \xb5"),
    (b"x-odd-overlong", b"\xc0\xaf \xc0\x80 \xe0\x80\xaf \xf0\x80\x80\xaf"),  # '/', NUL, '/', '/'
    (b"x-odd-truncated", b"euro \xe2\x82 smile \xf0\x9f\x98"),
    (b"x-odd-truncated-end", b"abc\xe2"),
    (b"x-odd-surrogate", b"\xed\xa0\x80"),  # U+D800 encoded as UTF-8
    (b"x-odd-surrogates", b"\xed\xa0\xbd\xed\xb8\x80 \xed\xbf\xbf"),  # CESU-8 pair, U+DFFF
    (b"x-odd-beyond", b"\xf4\x90\x80\x80 \xf8\x88\x80\x80\x80 \xfc\x84\x80\x80\x80\x80"),
    (b"x-odd-ff-fe-bytes", b"\xfe\xff \xff\xfe"),  # never in UTF-8 (and UTF-16 BOMs)
    (b"x-odd-tabs-obs", b"a\tb\t\t\xa0c\t\x85d\xff"),  # HTAB inside, obs-text (NBSP, NEL)
    (b"x-odd-mixed", "prix: 5 € ".encode() + b"\xe9t\xe9 " + "数据".encode() + b"\xc3"),
    (b"x-odd-valid-utf8", "é 数据 🙂 \u2028".encode()),  # valid: for contrast
    (b"x-odd-bom", b"\xef\xbb\xbfbom"),
]
ODD_NAMES = {name for name, _ in ODD}

#: Bytes Envoy refuses in a value itself (measured on Envoy 1.40, see the module doc).
ENVOY_REFUSES = [0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f]

# ---------------------------------------------------------------------------
# The routers
# ---------------------------------------------------------------------------

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class OddEnvoy(EnvoyRouter):
    """The bundled Envoy with trailers kept on HTTP/1.1 (Envoy drops them there unless
    ``enable_trailers``): downstream, on the failover hop, and to the mock providers."""

    def config_doc(self) -> dict:
        doc = build_config(self.plugin_config, self.cluster_ports, self.extra_env_keys,
                           access_log_path=self.access_log_path)
        for listener in doc["static_resources"]["listeners"]:
            for f in listener["filter_chains"][0]["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    f["typed_config"].setdefault("http_protocol_options", {})["enable_trailers"] = True
        assert _hcm(doc)["http_protocol_options"] == {"enable_trailers": True}
        for name in ("llm_failover", "mock-a", "mock-b"):
            options = _cluster(doc, name).setdefault("typed_extension_protocol_options", {})
            http = options.setdefault(HTTP_PROTOCOL_OPTIONS,
                                      {"@type": "type.googleapis.com/" + HTTP_PROTOCOL_OPTIONS})
            h1_options = http.setdefault("explicit_http_config", {}).setdefault("http_protocol_options", {})
            h1_options["enable_trailers"] = True
        return doc


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def plugin_config(kind: str) -> dict:
    """The bundled configuration, with a rule on a request header first; ``keyed``: with
    ``clients`` (one key, and one client named by the identity header)."""
    config = bundled_plugin_config()
    config["rules"] = [{"name": "tenant", "match": {"headers": [{"name": RULE_HEADER, "exact": "gold"}]},
                        "use_model": "smart"}] + config["rules"]
    if kind == "keyed":
        config["clients"] = {"identity_header": IDENTITY_HEADER, "keys": [
            {"name": "team", "key_sha256": sha(CLIENT_KEY)},
            {"name": "robot"}]}
    return config


def panics(r: EnvoyRouter) -> list[str]:
    """The lines of Envoy's log that report a panic in the filter (and the traps after it)."""
    try:
        with open(r.log_path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if "panicked" in ln or "Uncaught RuntimeError" in ln]


def sound(r: Optional[EnvoyRouter]) -> bool:
    return r is not None and r.proc is not None and r.proc.poll() is None and not panics(r)


class Routers:
    """One Envoy per kind, replaced when an earlier test broke it."""

    def __init__(self, mock_a, mock_b):
        self.mocks = (mock_a, mock_b)
        self.live: dict[str, EnvoyRouter] = {}

    def get(self, kind: str) -> EnvoyRouter:
        r = self.live.get(kind)
        if not sound(r):
            if r is not None:
                r.stop()
            r = OddEnvoy(mock_a=self.mocks[0], mock_b=self.mocks[1], plugin_config=plugin_config(kind),
                         env={"MOCK_API_KEY": MOCK_KEY}, concurrency=CONCURRENCY, name="odd-" + kind)
            self.live[kind] = r.start()
        r.mocks = self.mocks
        return r

    def stop(self) -> None:
        for r in self.live.values():
            r.stop()


@pytest.fixture(scope="module")
def _routers(_mock_a, _mock_b):
    rs = Routers(_mock_a, _mock_b)
    try:
        yield rs
    finally:
        rs.stop()


@pytest.fixture
def plain(_routers, mock_a, mock_b):
    """The router without ``clients``."""
    return _routers.get("plain")


@pytest.fixture
def keyed(_routers, mock_a, mock_b):
    """The router with ``clients``."""
    return _routers.get("keyed")


# ---------------------------------------------------------------------------
# HTTP/1.1 and HTTP/2 clients that keep bytes as bytes
# ---------------------------------------------------------------------------


def _b(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


class Reply:
    """A response: status, headers and trailers as (bytes, bytes) in order, the body (de-chunked)."""

    def __init__(self, status: Optional[int], headers, body: bytes, trailers=(), note: str = ""):
        self.status = status
        self.headers = [(k.lower(), v) for k, v in headers]
        self.body = body
        self.trailers = [(k.lower(), v) for k, v in trailers]
        self.note = note

    def all(self, name) -> list[bytes]:
        return [v for k, v in self.headers if k == _b(name).lower()]

    def header(self, name) -> Optional[bytes]:
        vals = self.all(name)
        return vals[0] if vals else None

    def trailer(self, name) -> Optional[bytes]:
        vals = [v for k, v in self.trailers if k == _b(name).lower()]
        return vals[0] if vals else None

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return "Reply(%s, %r, %r%s)" % (self.status, self.headers[:12], self.body[:300],
                                         ", " + self.note if self.note else "")


def _field_lines(block: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in block.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b":")
            out.append((k, v.strip(b" \t")))
    return out


def h1_complete(data: bytes) -> bool:
    """``data`` holds a whole response (so the client need not wait for the connection to close,
    which Envoy delays by a second after its own errors)."""
    sep = data.find(b"\r\n\r\n")
    if sep < 0:
        return False
    resp = parse_h1(data)
    return not resp.note and (resp.header("content-length") is not None
                              or b"chunked" in (resp.header("transfer-encoding") or b""))


def parse_h1(data: bytes) -> Reply:
    sep = data.find(b"\r\n\r\n")
    if sep < 0:
        return Reply(None, [], data, note="no complete response head")
    lines = data[:sep].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = _field_lines(b"\r\n".join(lines[1:]))
    rest = data[sep + 4:]
    te = b",".join(v for k, v in headers if k.lower() == b"transfer-encoding").lower()
    if b"chunked" in te:
        body, i = bytearray(), 0
        while True:
            j = rest.find(b"\r\n", i)
            if j < 0:
                return Reply(status, headers, bytes(body), note="chunked body cut short")
            size = int(rest[i:j].split(b";")[0], 16)
            i = j + 2
            if size == 0:
                end = rest.find(b"\r\n\r\n", i - 2)
                trailers = _field_lines(rest[i:end]) if end >= 0 else []
                note = "" if end >= 0 else "no end of trailers"
                return Reply(status, headers, bytes(body), trailers, note)
            body += rest[i:i + size]
            i += size + 2
    cl = [v for k, v in headers if k.lower() == b"content-length"]
    if cl:
        n = int(cl[0])
        return Reply(status, headers, rest[:n], note="" if len(rest) >= n else "short body")
    return Reply(status, headers, rest)


def h1(port: int, method: str, path: str, headers: Iterable = (), body: Optional[bytes] = None,
       timeout: float = 10.0) -> Reply:
    """One HTTP/1.1 request on a new connection (``Connection: close``), header bytes as given."""
    head = b"%s %s HTTP/1.1\r\nhost: llm.test\r\n" % (method.encode(), path.encode())
    for k, v in headers:
        head += _b(k) + b": " + _b(v) + b"\r\n"
    if body is not None:
        head += b"content-length: %d\r\n" % len(body)
    head += b"connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head + (body or b""))
        chunks, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not got:
                break
            chunks.append(got)
            if h1_complete(b"".join(chunks)):
                break
    return parse_h1(b"".join(chunks))


def h2_request(port: int, method: str, path: str, headers: Iterable = (), body: Optional[bytes] = None,
               timeout: float = 10.0, request_trailers: Iterable = ()) -> Reply:
    """One HTTP/2 (prior knowledge) request on a new connection, header bytes unvalidated.
    A stream reset or a closed connection gives status None (and says so in ``note``)."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                    validate_outbound_headers=False, normalize_outbound_headers=False,
                                    validate_inbound_headers=False, normalize_inbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    hdrs = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"llm.test"),
            (b":path", path.encode())] + [(_b(k).lower(), _b(v)) for k, v in headers]
    status, resp_headers, data, trailers, note = None, [], b"", [], ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        conn.initiate_connection()
        conn.send_headers(1, hdrs, end_stream=body is None)
        request_trailers = [(_b(k), _b(v)) for k, v in request_trailers]
        if body is not None:
            conn.send_data(1, body, end_stream=not request_trailers)
        if request_trailers:
            conn.send_headers(1, request_trailers, end_stream=True)
        s.sendall(conn.data_to_send())
        deadline, done = time.monotonic() + timeout, False
        while not done and time.monotonic() < deadline:
            try:
                got = s.recv(65536)
            except (socket.timeout, ConnectionResetError) as e:
                note = "connection: %s" % type(e).__name__
                break
            if not got:
                note = note or "connection closed"
                break
            for ev in conn.receive_data(got):
                if isinstance(ev, h2.events.ResponseReceived):
                    resp_headers = [(k, v) for k, v in ev.headers if not k.startswith(b":")]
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = list(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
                elif isinstance(ev, h2.events.StreamReset):
                    note, done, status = "stream reset (%s)" % ev.error_code, True, None
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    note, done = "goaway (%s)" % ev.error_code, True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        if not done and not note:
            note = "timed out"
    return Reply(status, resp_headers, data, trailers, note)


# ---------------------------------------------------------------------------
# What the requests are
# ---------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Say hello."}]
ANTHROPIC = [(b"anthropic-version", b"2023-06-01")]

#: name: (method, path, body or None, extra headers, what the answer is, streamed)
TARGETS: dict[str, tuple] = {
    "chat": ("POST", "/v1/chat/completions", {"model": "fast", "messages": MESSAGES}, [], "chat.completion", False),
    "chat-stream": ("POST", "/v1/chat/completions", {"model": "fast", "messages": MESSAGES, "stream": True},
                    [], b"data: [DONE]", True),
    "completions": ("POST", "/v1/completions", {"model": "fast", "prompt": "Say hello."}, [], "text_completion",
                    False),
    "completions-stream": ("POST", "/v1/completions", {"model": "fast", "prompt": "Say hello.", "stream": True},
                           [], b"data: [DONE]", True),
    "responses": ("POST", "/v1/responses", {"model": "fast", "input": "Say hello."}, [], "response", False),
    "responses-stream": ("POST", "/v1/responses", {"model": "fast", "input": "Say hello.", "stream": True},
                         [], b"event: response.completed", True),
    "embeddings": ("POST", "/v1/embeddings", {"model": "fast", "input": "Say hello."}, [], "list", False),
    "messages": ("POST", "/v1/messages", {"model": "fast", "max_tokens": 16, "messages": MESSAGES}, ANTHROPIC,
                 "message", False),
    "messages-stream": ("POST", "/v1/messages", {"model": "fast", "max_tokens": 16, "messages": MESSAGES,
                                                 "stream": True}, ANTHROPIC, b"event: message_stop", True),
    "passthrough-get": ("GET", "/v1/files", None, [], "passthrough", False),
    "passthrough-post": ("POST", "/v1/audio/speech", {"model": "tts-1", "input": "Say hello."}, [],
                         "passthrough", False),
    "models": ("GET", "/v1/models", None, [], "models", False),
}
UPSTREAM_TARGETS = [t for t in TARGETS if t != "models"]
ROUTED = [t for t in TARGETS if not t.startswith(("passthrough", "models"))]


def body_bytes(body) -> Optional[bytes]:
    return None if body is None else json.dumps(body).encode()


def send(r: EnvoyRouter, target: str, headers: Iterable = (), http2: bool = False, key: bool = False,
         timeout: float = 10.0) -> Reply:
    method, path, body, extra, _, _ = TARGETS[target]
    hdrs = list(extra) + list(headers)
    if body is not None:
        hdrs.insert(0, (b"content-type", b"application/json"))
    if key:
        hdrs.append((b"authorization", b"Bearer " + CLIENT_KEY.encode()))
    fn = h2_request if http2 else h1
    return fn(r.port, method, path, hdrs, body_bytes(body), timeout=timeout)


def trouble(r: EnvoyRouter) -> str:
    lines = panics(r)
    return ("\n--- panics in Envoy's log (%s) ---\n%s" % (r.log_path, "\n".join(lines[:6]))) if lines else ""


def assert_answer(r: EnvoyRouter, target: str, resp: Reply) -> None:
    """The answer of a normal request to ``target``: status 200 and the body of its kind."""
    _, _, _, _, kind, streamed = TARGETS[target]
    assert resp.status == 200, "%s: %r%s" % (target, resp, trouble(r))
    assert not resp.note, (target, resp)
    if target in ROUTED:
        assert resp.header("x-llm-router-upstream") == b"mock-a", resp
    if streamed:
        assert resp.header("content-type").startswith(b"text/event-stream"), resp
        assert kind in resp.body, resp
        assert resp.body.endswith(b"\n\n"), resp
        return
    doc = resp.json()
    if kind == "models":
        assert doc["object"] == "list" and doc["data"], doc
    elif kind == "passthrough":
        assert doc["mock"] == "mock-a" and doc["path"] == TARGETS[target][1], doc
        assert resp.header("x-llm-router-upstream") is None, resp
    elif kind == "message":
        assert doc["type"] == "message", doc
    else:
        assert doc["object"] == kind, doc


def only_request(mock_a, mock_b, target: Optional[str] = None):
    """The single request a provider got (mock-a: the target of ``fast`` and of passthrough); for
    a routed ``target``, with the model rewritten (so the router did route it)."""
    assert mock_b.requests == [], mock_b.requests
    reqs = mock_a.requests
    assert len(reqs) == 1, reqs
    if target in ROUTED:
        assert reqs[0].path == TARGETS[target][1] and reqs[0].json()["model"] == "mock-small", reqs[0]
    return reqs[0]


def assert_sent_exactly(rec, sent: Iterable[tuple[bytes, bytes]]) -> None:
    """Each header reached the provider once, its value byte for byte."""
    for name, value in sent:
        got = rec.raw_header_all(name)
        assert got == [value], "%s: sent %r, the provider got %r" % (name.decode(), value, got)


def assert_got_exactly(r: EnvoyRouter, resp: Reply, sent: Iterable[tuple[bytes, bytes]], trailers=False) -> None:
    """Each header (or trailer) reached the client once, its value byte for byte."""
    for name, value in sent:
        got = [v for k, v in (resp.trailers if trailers else resp.headers) if k == name.lower()]
        assert got == [value], "%s: the provider sent %r, the client got %r%s" % (
            name.decode(), value, got, trouble(r))


def assert_error_400(r: EnvoyRouter, resp: Reply, header: str, secret: Optional[bytes] = None) -> dict:
    """The router's OpenAI-shaped 400 naming ``header``."""
    assert resp.status == 400, "%r%s" % (resp, trouble(r))
    assert resp.header("content-type") == b"application/json", resp
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["type"] == "invalid_request_error", err
    assert isinstance(err["message"], str) and header in err["message"].lower(), (header, err)
    assert err["code"] is None or isinstance(err["code"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert not [k for k, _ in resp.headers if k.startswith(b"x-llm-router-")], resp
    if secret is not None:
        assert secret not in resp.body and all(secret not in v for _, v in resp.headers), resp
    return err


# ---------------------------------------------------------------------------
# After every odd request: Envoy still serves, on every worker, and nothing panicked
# ---------------------------------------------------------------------------

WORKER_CX = re.compile(r"^listener\.127\.0\.0\.1_\d+\.worker_(\d+)\.downstream_cx_total$")


def worker_connections(r: EnvoyRouter) -> dict[str, int]:
    return {m.group(1): v for k, v in r.counters("listener.").items() if (m := WORKER_CX.match(k))}


def _ordinary(r: EnvoyRouter, i: int, key: bool) -> Optional[str]:
    """One ordinary request (chat to either provider, the model list, a passed-through path) on
    a new connection; what went wrong, if anything."""
    auth = [(b"authorization", b"Bearer " + CLIENT_KEY.encode())] if key else []
    kind = i % 4
    try:
        if kind in (0, 1):
            model, upstream = ("fast", b"mock-a") if kind == 0 else ("smart", b"mock-b")
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ordinary %d" % i}]})
            resp = h1(r.port, "POST", "/v1/chat/completions", [(b"content-type", b"application/json")] + auth,
                      body.encode(), timeout=5)
            ok = resp.status == 200 and resp.header("x-llm-router-upstream") == upstream \
                and resp.json()["object"] == "chat.completion"
        elif kind == 2:
            resp = h1(r.port, "GET", "/v1/models", auth, timeout=5)
            ok = resp.status == 200 and resp.json()["object"] == "list"
        else:
            resp = h1(r.port, "GET", "/v1/files?n=%d" % i, auth, timeout=5)
            ok = resp.status == 200 and resp.json()["mock"] == "mock-a"
    except Exception as e:  # noqa: BLE001 - reported below
        return "request %d: %s: %s" % (i, type(e).__name__, e)
    return None if ok else "request %d: %r" % (i, resp)


def assert_still_serving(r: EnvoyRouter, key: bool = False) -> None:
    """``FOLLOW_UPS`` ordinary requests, 10 at a time, each on a new connection, all succeed; every
    worker took some of them; no panic in Envoy's log."""
    r.assert_alive()
    before = worker_connections(r)
    with ThreadPoolExecutor(max_workers=10) as pool:
        failures = [f for f in pool.map(lambda i: _ordinary(r, i, key), range(FOLLOW_UPS)) if f]
    assert not failures, "%d of %d ordinary requests failed after the odd one:\n%s%s" % (
        len(failures), FOLLOW_UPS, "\n".join(failures[:5]), trouble(r))
    after = worker_connections(r)
    grew = {w for w, n in after.items() if n > before.get(w, 0)}
    assert len(after) == CONCURRENCY and grew == set(after), (before, after)
    assert not panics(r), trouble(r)
    for mock in r.mocks:  # what the test looks at next is its own
        mock.clear()


# ---------------------------------------------------------------------------
# What Envoy lets through at all
# ---------------------------------------------------------------------------


def test_bytes_envoy_refuses_itself(plain, mock_a, mock_b):
    """Control bytes and DEL: Envoy's own refusals, before the filter (HTTP/1.1: a plain-text 400;
    HTTP/2: the connection closed, no answer; from the upstream: 502); a bare CR in an HTTP/1.1
    value is dropped. HTAB and every byte 0x80-0xff pass (the other tests)."""
    values = [b"a" + bytes([b]) + b"z" for b in ENVOY_REFUSES]
    for value in values:
        resp = send(plain, "chat", [(b"x-odd", value)])
        assert resp.status == 400 and resp.header("content-type") == b"text/plain", (value, resp)
    # (Side by side: Envoy closes each connection after its delayed-close second.)
    with ThreadPoolExecutor(max_workers=len(values)) as pool:
        replies = list(pool.map(lambda v: h2_request(plain.port, "GET", "/v1/files", [(b"x-odd", v)],
                                                     timeout=5), values))
    for value, resp in zip(values, replies):
        assert resp.status is None and "closed" in resp.note, (value, resp)
    assert mock_a.requests == [] and mock_b.requests == []
    # An HTTP/1.1 bare LF ends the line: what follows is no header line.
    assert send(plain, "chat", [(b"x-odd", b"a\nz")]).status == 400
    assert_still_serving(plain)

    resp = send(plain, "passthrough-get", [(b"x-odd-cr", b"a\rz")])
    assert resp.status == 200, resp
    assert only_request(mock_a, mock_b).raw_header("x-odd-cr") == b"az"

    for b in (0x00, 0x01, 0x7f):
        mock_a.set_response(200, {"mock": "mock-a"}, headers=[(b"x-odd", b"a" + bytes([b]) + b"z")])
        resp = send(plain, "passthrough-get")
        assert resp.status == 502, (hex(b), resp)
    mock_a.reset_response()
    assert_still_serving(plain)


# ---------------------------------------------------------------------------
# Request headers, without clients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
def test_odd_request_headers_pass_through(plain, mock_a, mock_b, target):
    """Every odd value at once: answered as usual; the provider got each byte for byte."""
    resp = send(plain, target, ODD)
    assert_answer(plain, target, resp)
    if target == "models":
        assert mock_a.requests == [] and mock_b.requests == []
    else:
        assert_sent_exactly(only_request(mock_a, mock_b, target), ODD)
    assert_still_serving(plain)


@pytest.mark.parametrize("target", ["chat-stream", "messages", "passthrough-post", "models"])
def test_odd_request_headers_over_http2(plain, mock_a, mock_b, target):
    resp = send(plain, target, ODD, http2=True)
    assert_answer(plain, target, resp)
    if target != "models":
        assert_sent_exactly(only_request(mock_a, mock_b, target), ODD)
    assert_still_serving(plain)


def test_every_high_byte_alone(plain, mock_a, mock_b):
    """Each byte 0x80-0xff as a whole value of its own (64 headers a request), both ways."""
    for lo in (0x80, 0xc0):
        single = [(b"x-byte-%02x" % b, bytes([b])) for b in range(lo, lo + 64)]
        resp = send(plain, "chat", single)
        assert_answer(plain, "chat", resp)
        assert_sent_exactly(only_request(mock_a, mock_b, "chat"), single)
        assert_still_serving(plain)
        mock_a.set_extra_headers(single)
        resp = send(plain, "chat-stream")
        assert_answer(plain, "chat-stream", resp)
        assert_got_exactly(plain, resp, single)
        mock_a.reset_response()
        assert_still_serving(plain)


def test_issue_example_user_agent_alone(plain, mock_a, mock_b):
    """The issue's reproduction: ``User-Agent: \\xff``, no key, on a routed path and any other."""
    for target in ("chat", "passthrough-get", "models"):
        resp = send(plain, target, [(b"user-agent", b"\xff")])
        assert_answer(plain, target, resp)
        if target != "models":
            assert only_request(mock_a, mock_b, target).raw_header_all("user-agent") == [b"\xff"]
        assert_still_serving(plain)


@pytest.mark.parametrize("model,upstream", [("fast", "mock-a"), ("smart", "mock-b")])
def test_odd_credentials_are_replaced_not_leaked(plain, mock_a, mock_b, model, upstream):
    """Without clients the router replaces the client's credentials with the provider's key: the
    client's odd values reach no provider, whatever the provider's auth header is."""
    marker = secrets.token_hex(8).encode()
    creds = [(b"authorization", b"Bearer sk-" + marker + b"\xff\xfe"),
             (b"x-api-key", b"sk-" + marker + b"\xed\xa0\x80"),
             (b"api-key", marker + b"\xc0\xaf")]
    body = json.dumps({"model": model, "messages": MESSAGES}).encode()
    resp = h1(plain.port, "POST", "/v1/chat/completions", [(b"content-type", b"application/json")] + creds, body)
    assert resp.status == 200 and resp.header("x-llm-router-upstream") == upstream.encode(), \
        "%r%s" % (resp, trouble(plain))
    mock = mock_a if upstream == "mock-a" else mock_b
    (rec,) = mock.requests
    assert not (mock_b if mock is mock_a else mock_a).requests
    if upstream == "mock-a":
        assert rec.raw_header_all("authorization") == [b"Bearer " + MOCK_KEY.encode()]
        assert rec.raw_header_all("x-api-key") == []
    else:
        assert rec.raw_header_all("x-api-key") == [MOCK_KEY.encode()]
        assert rec.raw_header_all("authorization") == []
    assert rec.raw_header_all("api-key") == []
    for line in rec.raw_header_lines:
        assert marker not in line and not re.search(rb"[\x80-\xff]", line), line
    assert_still_serving(plain)


def test_odd_credentials_on_a_passed_through_path_are_the_clients(plain, mock_a, mock_b):
    """A path the router does not route: without clients its credentials are not the router's
    business, and reach the upstream as sent."""
    creds = [(b"authorization", b"Bearer sk-\xff\xfe"), (b"x-api-key", b"\xed\xa0\x80"), (b"api-key", HIGH)]
    resp = send(plain, "passthrough-post", creds)
    assert_answer(plain, "passthrough-post", resp)
    assert_sent_exactly(only_request(mock_a, mock_b), creds)
    assert_still_serving(plain)


def test_odd_value_in_a_rule_header_is_400(plain, mock_a, mock_b):
    """A header a rule matches (``x-tenant: gold`` routes to smart): not UTF-8, 400 naming it."""
    auto = {"model": "auto", "messages": MESSAGES}
    for value in (b"gold\xff", b"\xed\xa0\x80", b"g\xc0\xafld"):
        resp = h1(plain.port, "POST", "/v1/chat/completions",
                  [(b"content-type", b"application/json"), (RULE_HEADER.encode(), value)],
                  json.dumps(auto).encode())
        assert_error_400(plain, resp, RULE_HEADER)
        assert mock_a.requests == [] and mock_b.requests == []
        assert_still_serving(plain)
    # The rule itself works.
    resp = h1(plain.port, "POST", "/v1/chat/completions",
              [(b"content-type", b"application/json"), (RULE_HEADER.encode(), b"gold")], json.dumps(auto).encode())
    assert resp.status == 200 and resp.header("x-llm-router-rule") == b"rule:tenant", resp


def test_long_odd_request_header_near_the_limit(plain, mock_a, mock_b):
    """A 59 KiB value of high bytes (Envoy's request header limit is 60 KiB in all): byte for byte
    on a routed and a passed-through path; 1 KiB more is Envoy's own 431."""
    value = (HIGH * 500)[:59 * 1024]
    for target in ("chat", "passthrough-post"):
        resp = send(plain, target, [(b"x-odd-long", value)])
        assert_answer(plain, target, resp)
        assert_sent_exactly(only_request(mock_a, mock_b, target), [(b"x-odd-long", value)])
        assert_still_serving(plain)
    resp = send(plain, "chat", [(b"x-odd-long", value + HIGH * 8)])
    assert resp.status == 431, resp
    assert mock_a.requests == [] and mock_b.requests == []
    assert_still_serving(plain)


def test_many_odd_request_headers(plain, mock_a, mock_b):
    """80 odd headers (Envoy takes 100 at most) on a routed stream: each byte for byte."""
    many = [(b"x-odd-%02d-" % i + ODD[i % len(ODD)][0], ODD[i % len(ODD)][1]) for i in range(80)]
    resp = send(plain, "chat-stream", many)
    assert_answer(plain, "chat-stream", resp)
    assert_sent_exactly(only_request(mock_a, mock_b, "chat-stream"), many)
    assert_still_serving(plain)


# ---------------------------------------------------------------------------
# Request headers, with clients
# ---------------------------------------------------------------------------

#: header: (an odd value, the bytes of it that must not be echoed)
ODD_CREDENTIALS = {
    "authorization": (b"Bearer " + CLIENT_KEY.encode() + b"\xff", CLIENT_KEY.encode()),
    "x-api-key": (CLIENT_KEY.encode() + b"\xed\xa0\x80", CLIENT_KEY.encode()),
    "api-key": (b"\xc0\xaf" + CLIENT_KEY.encode(), CLIENT_KEY.encode()),
    IDENTITY_HEADER: (b"rob\xf6t", b"rob\xf6t"),
}


@pytest.mark.parametrize("header", list(ODD_CREDENTIALS))
def test_odd_credential_with_clients_is_400(keyed, mock_a, mock_b, header):
    """With clients, the key (or the identity header) is the router's to read: not UTF-8, 400
    naming the header (not echoing it) on a routed path, the model list and a passed-through path,
    over HTTP/1.1 and HTTP/2; no provider sees the request."""
    value, secret = ODD_CREDENTIALS[header]
    for target, http2 in (("chat", False), ("models", False), ("passthrough-get", False), ("chat-stream", True)):
        resp = send(keyed, target, [(header.encode(), value)], http2=http2)
        assert_error_400(keyed, resp, header, secret)
        assert mock_a.requests == [] and mock_b.requests == [], (target, mock_a.requests, mock_b.requests)
        assert_still_serving(keyed, key=True)


def test_odd_rule_header_with_clients_is_400(keyed, mock_a, mock_b):
    body = json.dumps({"model": "auto", "messages": MESSAGES}).encode()
    resp = h1(keyed.port, "POST", "/v1/chat/completions",
              [(b"content-type", b"application/json"), (b"authorization", b"Bearer " + CLIENT_KEY.encode()),
               (RULE_HEADER.encode(), b"gold\xed\xa0\x80")], body)
    assert_error_400(keyed, resp, RULE_HEADER, CLIENT_KEY.encode())
    assert mock_a.requests == [] and mock_b.requests == []
    assert_still_serving(keyed, key=True)


@pytest.mark.parametrize("target", ["chat", "embeddings", "messages-stream", "passthrough-post", "models"])
def test_odd_request_headers_with_clients_pass_through(keyed, mock_a, mock_b, target):
    """A known key and odd headers the router does not need: answered; the provider got the odd
    headers byte for byte and never the client's key."""
    resp = send(keyed, target, ODD, key=True)
    assert_answer(keyed, target, resp)
    if target == "models":
        assert mock_a.requests == [] and mock_b.requests == []
    else:
        rec = only_request(mock_a, mock_b, target)
        assert_sent_exactly(rec, ODD)
        expected = [] if target.startswith("passthrough") else [b"Bearer " + MOCK_KEY.encode()]
        assert rec.raw_header_all("authorization") == expected
        assert not [ln for ln in rec.raw_header_lines if CLIENT_KEY.encode() in ln]
    assert_still_serving(keyed, key=True)


# ---------------------------------------------------------------------------
# Response headers and trailers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", UPSTREAM_TARGETS)
def test_odd_response_headers_reach_the_client(plain, mock_a, mock_b, target):
    """The provider answers with every odd value: the client gets the answer as usual and each
    header byte for byte (routed answers also carry the router's headers)."""
    mock_a.set_extra_headers(ODD)
    resp = send(plain, target)
    assert_answer(plain, target, resp)
    assert_got_exactly(plain, resp, ODD)
    mock_a.reset_response()
    assert_still_serving(plain)


@pytest.mark.parametrize("target", ["chat", "responses-stream", "passthrough-get"])
def test_odd_response_headers_over_http2(plain, mock_a, mock_b, target):
    mock_a.set_extra_headers(ODD)
    resp = send(plain, target, http2=True)
    assert_answer(plain, target, resp)
    assert_got_exactly(plain, resp, ODD)
    mock_a.reset_response()
    assert_still_serving(plain)


@pytest.mark.parametrize("target", ["chat", "messages-stream", "passthrough-get"])
def test_odd_response_headers_with_clients(keyed, mock_a, mock_b, target):
    mock_a.set_extra_headers(ODD)
    resp = send(keyed, target, key=True)
    assert_answer(keyed, target, resp)
    assert_got_exactly(keyed, resp, ODD)
    mock_a.reset_response()
    assert_still_serving(keyed, key=True)


def test_long_and_many_odd_response_headers(plain, mock_a, mock_b):
    """A 79 KiB value (Envoy takes 80 KiB of response headers from an upstream), then 80 odd
    headers, on a routed answer and a passed-through one."""
    long_value = [(b"x-odd-long", (HIGH * 700)[:79 * 1024])]
    many = [(b"x-odd-%02d-" % i + ODD[i % len(ODD)][0], ODD[i % len(ODD)][1]) for i in range(80)]
    for sent in (long_value, many):
        for target in ("chat", "passthrough-get"):
            mock_a.set_extra_headers(sent)
            resp = send(plain, target)
            assert_answer(plain, target, resp)
            assert_got_exactly(plain, resp, sent)
            mock_a.reset_response()
            assert_still_serving(plain)


ODD_TRAILERS = [(b"x-odd-trailer-" + name.replace(b"user-agent", b"ua"), value) for name, value in ODD[:8]]


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("target", ["chat-stream", "messages-stream", "passthrough-get"])
def test_odd_response_trailers(plain, mock_a, mock_b, target, http2):
    """Chunked answers ending in trailers with odd values: the client gets the whole answer and
    the trailers byte for byte (HTTP/1.1 chunked trailers, HTTP/2 trailing HEADERS)."""
    if TARGETS[target][5]:
        mock_a.set_extra_headers(trailers=ODD_TRAILERS)
    else:
        mock_a.set_stream([b'{"mock": "mock-a", ', b'"path": "/v1/files"}'], times=1,
                          headers={"content-type": "application/json"}, trailers=ODD_TRAILERS)
    resp = send(plain, target, [(b"te", b"trailers")], http2=http2, timeout=8)
    mock_a.reset_response()
    assert_answer(plain, target, resp)
    assert_got_exactly(plain, resp, ODD_TRAILERS, trailers=True)
    assert_still_serving(plain)


# ---------------------------------------------------------------------------
# Request trailers: a routed body that ends with trailers is refused, never passed unrouted
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "keyed"])
def test_routed_body_ending_in_trailers_is_refused(kind, _routers, mock_a, mock_b):
    r = _routers.get(kind)
    body = json.dumps({"model": "smart", "messages": MESSAGES}).encode()
    headers = [("content-type", "application/json")]
    if kind == "keyed":
        headers.append(("authorization", "Bearer " + CLIENT_KEY))
    for trailers in ([("x-t", "1")], [("x-odd", b"\xff\xfe")]):
        resp = h2_request(r.port, "POST", "/v1/chat/completions", headers, body,
                          request_trailers=trailers)
        assert resp.status == 400, "%r%s" % (resp, trouble(r))
        assert resp.json()["error"]["code"] == "unsupported_trailers", resp
    assert not mock_a.requests and not mock_b.requests, "a trailered body reached a provider"
    # A passed-through path keeps its trailers (nothing the router reads).
    if kind == "plain":
        resp = h2_request(r.port, "POST", "/v1/files", headers, b"{}", request_trailers=[("x-t", "1")])
        assert resp.status == 200, "%r%s" % (resp, trouble(r))
    assert_still_serving(r, key=kind == "keyed")
