"""End-to-end tests of the errors the filter answers itself, and of bad plugin configurations.

Every error reply must be the OpenAI-shaped `{"error":{"message","type","param","code"}}`
with the status and code of the README's errors table, and the upstream must receive
nothing. Bad plugin configurations must be refused at load with a message naming the field.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import select
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (  # noqa: E402
    EnvoyRouter,
    assert_openai_error,
    bundled_plugin_config,
    chat,
    jdump,
    raw_http,
    router_headers,
    validate,
)

MOCK_KEY = "test-mock-key"
CHAT = "/v1/chat/completions"
JSON_CT = {"content-type": "application/json"}

# ---------------------------------------------------------------------------
# A second router with its own plugin configuration: a small body limit, unknown models
# passed through to mock-a, and an alias whose every upstream lacks its key.
# ---------------------------------------------------------------------------

LIMIT = 131072  # max_body_bytes of the custom router (128 KiB)
UNSET_1 = "LLMR_TEST_UNSET_KEY_1"
UNSET_2 = "LLMR_TEST_UNSET_KEY_2"

CUSTOM_CONFIG = {
    "upstreams": {
        "mock-a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
        "keyless-1": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": UNSET_1}},
        "keyless-2": {"cluster": "mock-b", "auth": {"type": "x-api-key", "key_env": UNSET_2}},
    },
    "models": {
        "fast": {"targets": [{"upstream": "mock-a", "model": "mock-small"}]},
        "keyless": {"targets": [{"upstream": "keyless-1", "model": "k1"},
                                {"upstream": "keyless-2", "model": "k2"}]},
    },
    "default": {"use_model": "fast"},
    "unknown_model": "passthrough",
    "passthrough_upstream": "mock-a",
    "max_body_bytes": LIMIT,
}


@pytest.fixture(scope="module")
def custom(_mock_a, _mock_b):
    env = {"MOCK_API_KEY": MOCK_KEY, UNSET_1: None, UNSET_2: None}
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CUSTOM_CONFIG, env=env,
                     extra_env_keys=[UNSET_1, UNSET_2], name="errors-custom") as r:
        yield r


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def post(router, body, headers=None, path=CHAT) -> httpx.Response:
    """POST raw bytes (or a dict, JSON-encoded) to the router."""
    content = body if isinstance(body, bytes) else jdump(body)
    h = dict(JSON_CT)
    h.update(headers or {})
    return httpx.post(router.url + path, content=content, headers=h, timeout=10)


def assert_no_upstream(*mocks) -> None:
    for m in mocks:
        assert m.requests == [], "%s received %r" % (m.name, m.requests)


def head_for(length=None, chunked=False, extra=b"") -> bytes:
    h = b"POST /v1/chat/completions HTTP/1.1\r\nHost: llm.test\r\nContent-Type: application/json\r\n"
    if length is not None:
        h += b"Content-Length: %d\r\n" % length
    if chunked:
        h += b"Transfer-Encoding: chunked\r\n"
    return h + extra + b"Connection: close\r\n\r\n"


class Raw:
    """A raw HTTP/1.1 response: status, header list, body (content-length framed)."""

    def __init__(self, data: bytes):
        sep = data.find(b"\r\n\r\n")
        assert sep >= 0, "no complete response head: %r" % data[:300]
        lines = data[:sep].decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split(" ")[1])
        self.header_list = [(k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
        self.headers = dict(self.header_list)
        body = data[sep + 4:]
        n = int(self.headers.get("content-length", len(body)))
        assert len(body) >= n, "short body %d of %d" % (len(body), n)
        self.content = body[:n]
        self.text = self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


def send_until_reply(port: int, head: bytes, pieces, delay: float = 0.05, timeout: float = 10.0):
    """Sends the head, then one piece per `delay` until the server starts answering; returns
    (pieces sent, Raw response). Stops writing as soon as a reply is readable, as a real
    client streaming a large body would, so the server's early answer is read, not reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        sent = 0
        for piece in pieces:
            readable, _, _ = select.select([s], [], [], delay)
            if readable:
                break
            s.sendall(piece)
            sent += 1
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                try:
                    r = Raw(data)
                    if len(r.content) >= int(r.headers.get("content-length", -1)):
                        return sent, r
                except AssertionError:
                    pass
    return sent, Raw(data)


def assert_raw_openai_error(resp: Raw, status: int, code: str, param=None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type") == "application/json", resp.header_list
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error"), err
    assert not [k for k, _ in resp.header_list if k.startswith("x-llm-router-")], resp.header_list
    return err


# ---------------------------------------------------------------------------
# 400: the body
# ---------------------------------------------------------------------------


@pytest.mark.core
@pytest.mark.parametrize("body", [
    b'{"model":"auto","messages":[',
    b"model=auto&messages=hi",
    b'{"model":"auto",}',
    b"\xff\xfe{}",
], ids=["truncated", "form-encoded", "trailing-comma", "not-utf8"])
def test_body_not_json_is_400_invalid_json(bundled, mock_a, mock_b, body):
    """A body that is not JSON gets 400 invalid_json and never reaches an upstream."""
    err = assert_openai_error(post(bundled, body), 400, "invalid_json", None)
    assert "not valid JSON" in err["message"], err
    assert_no_upstream(mock_a, mock_b)


@pytest.mark.core
@pytest.mark.parametrize("body", [b'[{"model":"auto"}]', b'"hello"', b"42", b"null", b"true"],
                         ids=["array", "string", "number", "null", "bool"])
def test_json_not_an_object_is_400_invalid_body(bundled, mock_a, mock_b, body):
    """Valid JSON that is not an object gets 400 invalid_body."""
    err = assert_openai_error(post(bundled, body), 400, "invalid_body", None)
    assert "object" in err["message"], err
    assert_no_upstream(mock_a, mock_b)


@pytest.mark.parametrize("model", [42, 1.5, {"name": "fast"}, ["fast"], True],
                         ids=["int", "float", "object", "array", "bool"])
def test_model_of_wrong_type_is_400_invalid_type(bundled, mock_a, mock_b, model):
    """A `model` that is not a string gets 400 invalid_type with param `model`."""
    assert_openai_error(post(bundled, chat("hello", model=model)), 400, "invalid_type", "model")
    assert_no_upstream(mock_a, mock_b)


@pytest.mark.core
def test_empty_model_is_400_invalid_value(bundled, mock_a, mock_b):
    """`"model": ""` gets 400 invalid_value with param `model`."""
    err = assert_openai_error(post(bundled, chat("hello", model="")), 400, "invalid_value", "model")
    assert "empty" in err["message"], err
    assert_no_upstream(mock_a, mock_b)


@pytest.mark.core
def test_post_with_content_length_zero_is_400_missing_body(bundled, mock_a, mock_b):
    """A POST with `content-length: 0` gets 400 missing_body."""
    assert_openai_error(post(bundled, b""), 400, "missing_body", None)
    assert_no_upstream(mock_a, mock_b)


def test_post_without_any_body_framing_is_400_missing_body(bundled, mock_a, mock_b):
    """A POST with neither content-length nor transfer-encoding (no body) gets 400 missing_body."""
    _, resp = send_until_reply(bundled.port, head_for(), [])
    assert_raw_openai_error(resp, 400, "missing_body", None)
    assert_no_upstream(mock_a, mock_b)


def test_empty_chunked_body_is_400_missing_body(bundled, mock_a, mock_b):
    """A chunked POST whose body is empty (only the last chunk) gets 400 missing_body too."""
    _, resp = send_until_reply(bundled.port, head_for(chunked=True), [b"0\r\n\r\n"])
    assert_no_upstream(mock_a, mock_b)
    # README: `missing_body` is "a routed endpoint without a body"; zero body bytes are no body,
    # whatever the framing (content-length: 0 already answers missing_body).
    assert_raw_openai_error(resp, 400, "missing_body", None)


# ---------------------------------------------------------------------------
# 400: the router's own request fields
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra, code, param", [
    ({"allowed_models": "mock-*"}, "invalid_type", "allowed_models"),
    ({"allowed_models": [1, 2]}, "invalid_type", "allowed_models"),
    ({"allowed_models": [""]}, "invalid_type", "allowed_models"),
    ({"allowed_models": ["m%d" % i for i in range(65)]}, "invalid_type", "allowed_models"),
    ({"allowed_models": ["x" * 257]}, "invalid_type", "allowed_models"),
    ({"provider": "mock-a"}, "invalid_type", "provider"),
    ({"provider": ["mock-a"]}, "invalid_type", "provider"),
    ({"provider": {"only": "mock-a"}}, "invalid_type", "provider.only"),
    ({"provider": {"ignore": {"mock-a": True}}}, "invalid_type", "provider.ignore"),
    ({"provider": {"order": [None]}}, "invalid_type", "provider.order"),
    ({"provider": {"sort": "fastest"}}, "invalid_value", "provider.sort"),
    ({"provider": {"sort": 1}}, "invalid_type", "provider.sort"),
    ({"provider": {"allow_fallbacks": "no"}}, "invalid_type", "provider.allow_fallbacks"),
], ids=["allowed-string", "allowed-numbers", "allowed-empty-item", "allowed-65-items",
        "allowed-item-too-long", "provider-string", "provider-array", "only-string",
        "ignore-object", "order-null-item", "sort-unknown", "sort-number", "fallbacks-string"])
def test_bad_router_fields_are_400(bundled, mock_a, mock_b, extra, code, param):
    """A malformed `allowed_models` / `provider` member gets 400 naming it in `param`."""
    assert_openai_error(post(bundled, chat("hello", **extra)), 400, code, param)
    assert_no_upstream(mock_a, mock_b)


# ---------------------------------------------------------------------------
# 404
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_unknown_explicit_model_is_404_model_not_found(bundled, mock_a, mock_b):
    """An explicit model nothing routes gets 404 model_not_found, param `model`, naming it."""
    err = assert_openai_error(post(bundled, chat("hello", model="gpt-9-ultra")), 404,
                              "model_not_found", "model")
    assert "gpt-9-ultra" in err["message"], err
    assert_no_upstream(mock_a, mock_b)


def test_404_message_with_hostile_model_stays_valid_json(bundled, mock_a, mock_b):
    """An unknown model full of quotes and control characters is echoed JSON-escaped, not raw."""
    model = 'evil"}\n\u0000\r\nx-evil: 1'
    resp = post(bundled, chat("hello", model=model))
    err = assert_openai_error(resp, 404, "model_not_found", "model")
    assert model in err["message"], err
    assert "x-evil" not in {k.lower() for k in resp.headers}, resp.headers
    assert_no_upstream(mock_a, mock_b)


# ---------------------------------------------------------------------------
# 413
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_declared_content_length_over_limit_is_413(custom, mock_a, mock_b):
    """A content-length above max_body_bytes gets 413 request_too_large before the body is read."""
    # Only the head is sent: a reply at all proves the filter answered on the headers alone.
    _, resp = send_until_reply(custom.port, head_for(LIMIT + 1), [], timeout=5)
    err = assert_raw_openai_error(resp, 413, "request_too_large", None)
    assert str(LIMIT) in err["message"], err
    assert_no_upstream(mock_a, mock_b)


def test_body_of_exactly_the_limit_is_routed(custom, mock_a, mock_b):
    """A body of exactly max_body_bytes is accepted and routed (the limit is inclusive)."""
    base = jdump(chat("", model="fast"))
    body = jdump(chat("a" * (LIMIT - len(base)), model="fast"))
    assert len(body) == LIMIT
    resp = post(custom, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-model"] == "mock-small"
    (got,) = mock_a.requests
    assert got.body == body.replace(b'"model":"fast"', b'"model":"mock-small"', 1)


@pytest.mark.core
def test_chunked_body_growing_past_limit_is_413(custom, mock_a, mock_b):
    """A chunked body (no content-length) that grows past max_body_bytes gets 413 mid-stream."""
    piece = b"x" * 32768
    pieces = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 12 + [b"0\r\n\r\n"]
    sent, resp = send_until_reply(custom.port, head_for(chunked=True), pieces, delay=0.1)
    err = assert_raw_openai_error(resp, 413, "request_too_large", None)
    assert str(LIMIT) in err["message"], err
    # 4 pieces are exactly the limit; the 5th crosses it and the reply comes then, before the
    # body is complete (12 pieces and the last chunk).
    assert 5 <= sent <= 12, "reply after %d pieces of 32 KiB" % sent
    assert_no_upstream(mock_a, mock_b)


# ---------------------------------------------------------------------------
# 415
# ---------------------------------------------------------------------------


@pytest.mark.core
@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "GZIP"])
def test_compressed_body_is_415(bundled, mock_a, mock_b, encoding):
    """A request with a content-encoding other than identity gets 415 unsupported_content_encoding."""
    body = gzip.compress(jdump(chat("hello")))
    resp = post(bundled, body, {"content-encoding": encoding})
    assert_openai_error(resp, 415, "unsupported_content_encoding", None)
    assert_no_upstream(mock_a, mock_b)


def test_identity_content_encoding_is_routed(bundled, mock_a, mock_b):
    """`content-encoding: identity` is not compression: the request is routed normally."""
    resp = post(bundled, chat("hello", model="fast"), {"content-encoding": "identity"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-upstream"] == "mock-a"
    assert len(mock_a.requests) == 1


# ---------------------------------------------------------------------------
# 503
# ---------------------------------------------------------------------------


@pytest.mark.core
def test_alias_whose_upstream_has_no_key_is_503_naming_the_variable(bundled, mock_a, mock_b):
    """The bundled `gpt-4o-mini` alias (OPENAI_API_KEY unset) gets 503 naming the variable."""
    err = assert_openai_error(post(bundled, chat("hello", model="gpt-4o-mini")), 503,
                              "no_available_target", None)
    assert "OPENAI_API_KEY" in err["message"] and "openai" in err["message"], err
    assert MOCK_KEY not in err["message"]
    assert_no_upstream(mock_a, mock_b)


def test_all_targets_without_keys_is_503_naming_every_variable(custom, mock_a, mock_b):
    """An alias whose every target's key variable is unset gets 503 naming both variables."""
    err = assert_openai_error(post(custom, chat("hello", model="keyless")), 503,
                              "no_available_target", None)
    assert UNSET_1 in err["message"] and UNSET_2 in err["message"], err
    assert "keyless-1" in err["message"] and "keyless-2" in err["message"], err
    assert_no_upstream(mock_a, mock_b)


@pytest.mark.parametrize("extra, reason", [
    ({"provider": {"only": ["no-such-provider"]}}, "excluded by provider.only"),
    ({"provider": {"ignore": ["MOCK-A"]}}, "excluded by provider.ignore"),
    ({"allowed_models": ["gpt-*", "mock-b/*"]}, "excluded by allowed_models"),
], ids=["only", "ignore-case-insensitive", "allowed-models"])
def test_preferences_excluding_every_target_is_503_with_reason(bundled, mock_a, mock_b, extra, reason):
    """Client preferences that exclude every candidate get 503 saying which preference did it."""
    err = assert_openai_error(post(bundled, chat("hello", model="fast", **extra)), 503,
                              "no_available_target", None)
    assert reason in err["message"], err
    assert_no_upstream(mock_a, mock_b)


# ---------------------------------------------------------------------------
# Passthrough model names and response headers
# ---------------------------------------------------------------------------


def _passthrough(router, mock_a, body: bytes):
    resp = raw_http(router.port, head_for(len(body)), [body])
    assert resp.status_code == 200, (resp.status_code, resp.content[:300])
    names = [k.lower() for k, _ in resp.header_list]
    assert resp.header("x-llm-router-rule") == "passthrough", resp.header_list
    assert resp.header("x-llm-router-upstream") == "mock-a", resp.header_list
    (got,) = mock_a.requests
    assert got.body == body, "a passthrough model leaves the body byte-identical"
    assert got.header("authorization") == "Bearer " + MOCK_KEY
    return resp, names, got


def test_passthrough_model_with_crlf_cannot_inject_headers(custom, mock_a, mock_b):
    """`"model":"a\\r\\nx-evil: 1"` (JSON escapes decoding to CR LF) injects no header anywhere."""
    body = b'{"model":"a\\r\\nx-evil: 1","messages":[{"role":"user","content":"hello"}]}'
    assert json.loads(body)["model"] == "a\r\nx-evil: 1"
    resp, names, got = _passthrough(custom, mock_a, body)
    assert "x-evil" not in names, resp.header_list
    assert "x-llm-router-model" not in names, resp.header_list
    # (x-mock-model is the mock's own, sanitised echo of the model it received.)
    ours = [(k, v) for k, v in resp.header_list if k.lower() != "x-mock-model"]
    assert not any("\r" in v or "\n" in v or "x-evil" in v.lower() for _, v in ours), ours
    assert "x-evil" not in {k.lower() for k, _ in got.headers}, got.headers
    assert_no_upstream(mock_b)


@pytest.mark.parametrize("escaped", [
    "nul\\u0000model", "esc\\u001b[31mred", "del\\u007f", "nel\\u0085", "bell\\u0007", "lf\\nonly",
], ids=["nul", "ansi-escape", "del", "c1-nel", "bell", "lf"])
def test_passthrough_model_with_control_chars_not_in_header(custom, mock_a, mock_b, escaped):
    """A passthrough model with control characters is forwarded verbatim but not echoed in a header."""
    body = b'{"model":"%s","messages":[{"role":"user","content":"hello"}]}' % escaped.encode()
    resp, names, got = _passthrough(custom, mock_a, body)
    assert "x-llm-router-model" not in names, resp.header_list


def test_passthrough_safe_model_is_echoed(custom, mock_a, mock_b):
    """A printable passthrough model does reach `x-llm-router-model` (the control case)."""
    body = jdump(chat("hello", model="vendor/some-model:latest@v2"))
    resp, names, got = _passthrough(custom, mock_a, body)
    assert resp.header("x-llm-router-model") == "vendor/some-model:latest@v2"


def test_passthrough_very_long_model_not_in_header(custom, mock_a, mock_b):
    """A 70 000-character passthrough model is forwarded but not echoed in a response header."""
    model = "m" * 70000
    body = jdump(chat("hello", model=model))
    resp, names, got = _passthrough(custom, mock_a, body)
    value = resp.header("x-llm-router-model")
    assert value is None, "x-llm-router-model echoes a %d-byte client model name" % len(value)
    mock_a.clear()
    # Consequence checked too: an HTTP/2 client (64 KiB header-list limit) can read the answer.
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        r2 = c.post(custom.url + CHAT, content=body, headers=JSON_CT)
    assert r2.status_code == 200


# ---------------------------------------------------------------------------
# Bad plugin configurations: refused at load, naming the field
# ---------------------------------------------------------------------------


def _bad(mutate):
    def build():
        c = bundled_plugin_config()
        mutate(c)
        return c
    return build


def _set(path, value):
    def mutate(c):
        obj = c
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return mutate


BAD_CONFIGS = {
    "unknown-top-level-field": (
        _bad(_set(["routes"], [])), "routes", "unknown field `routes`"),
    "unknown-upstream-in-target": (
        _bad(_set(["models", "fast", "targets", 0, "upstream"], "mock-z")),
        "models.fast.targets[0].upstream", "unknown upstream `mock-z`"),
    "rule-uses-unknown-alias": (
        _bad(_set(["rules", 0, "use_model"], "genius")), "rules[0].use_model", "unknown model alias `genius`"),
    "bad-tag-regex": (
        _bad(_set(["classifier", "tags", 0, "regex"], ["(unclosed"])), "classifier.tags[0].regex[0]",
        "invalid regex"),
    "complexity-out-of-order": (
        _bad(_set(["classifier", "complexity"], {"medium": 6, "high": 4, "xhigh": 9})),
        "classifier.complexity.high", "must be greater than"),
    "unknown-strategy": (
        _bad(_set(["models", "fast", "strategy"], "fastest")), "models.fast.strategy", "unknown variant `fastest`"),
    "weight-zero-weighted": (
        _bad(_set(["models", "smart"], {"strategy": "weighted", "targets": [
            {"upstream": "mock-b", "model": "mock-large", "weight": 0}]})),
        "models.smart.targets[0].weight", "at least 1"),
    "invalid-upstream-header-name": (
        _bad(_set(["upstreams", "anthropic", "headers"], {"anthropic version": "2023-06-01"})),
        "upstreams.anthropic.headers.anthropic version", "not a valid header name"),
    "auth-key-env-empty": (
        _bad(_set(["upstreams", "mock-a", "auth", "key_env"], "")), "upstreams.mock-a.auth.key_env",
        "environment variable name"),
    "not-json": (lambda: '{"upstreams": {"mock-a": ', None, "EOF while parsing"),
}

GOOD_CONFIGS = {
    "bundled": bundled_plugin_config,
}

SECRET = "s3cr3t-Value"


@pytest.fixture(scope="module")
def validations():
    """Runs every `envoy --mode validate` of this module, two at a time (they are CPU-bound)."""
    jobs = {("bad", k): (lambda b=b: validate(b())) for k, (b, _, _) in BAD_CONFIGS.items()}
    jobs.update({("good", k): (lambda b=b: validate(b())) for k, b in GOOD_CONFIGS.items()})
    # The key's value must pass through header checks: a control character is refused,
    # and the refusal must not print the key.
    jobs[("bad", "key-value-with-control-char")] = lambda: validate(
        bundled_plugin_config(), env={"MOCK_API_KEY": SECRET + "\x07"})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(f) for k, f in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_plugin_config_refused_naming_field(validations, case):
    """A bad plugin configuration fails `envoy --mode validate` with a message naming the field."""
    _, field, detail = BAD_CONFIGS[case]
    ok, out = validations[("bad", case)]
    assert ok is False, out[-2000:]
    lines = [l for l in out.splitlines() if "invalid plugin configuration:" in l]
    assert lines, out[-2000:]
    msg = lines[0].split("invalid plugin configuration:", 1)[1].strip()
    if field is not None:
        assert msg.startswith(field + ": "), msg
    assert detail in msg, msg


def test_key_with_control_char_refused_without_echoing_it(validations):
    """A provider key holding a control character is refused naming key_env, never printing the key."""
    ok, out = validations[("bad", "key-value-with-control-char")]
    assert ok is False, out[-2000:]
    assert "invalid plugin configuration: upstreams.mock-a.auth.key_env: the value of MOCK_API_KEY" in out, out[-2000:]
    assert SECRET not in out


@pytest.mark.parametrize("case", list(GOOD_CONFIGS))
def test_good_plugin_config_validates(validations, case):
    """The bundled plugin configuration passes `envoy --mode validate` (the control case)."""
    ok, out = validations[("good", case)]
    assert ok is True, out[-2000:]
    assert "invalid plugin configuration" not in out


# ---------------------------------------------------------------------------
# A bad configuration pushed over xDS: Envoy keeps the last good one
# ---------------------------------------------------------------------------


class LdsRouter(EnvoyRouter):
    """The bundled Envoy, except that the listener (with the filter and its plugin
    configuration) comes from a file-based LDS source in a watched directory, so that a test
    can push a new listener by atomically replacing the file."""

    def write_listener(self, plugin_config) -> None:
        doc = harness.build_config(plugin_config, self.cluster_ports, listener_port=self.fixed_port)
        listener = dict(doc["static_resources"]["listeners"][0])
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        tmp = os.path.join(self.lds_dir, ".lds.yaml.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            harness.yaml.safe_dump({"resources": [listener]}, f, sort_keys=False)
        os.rename(tmp, os.path.join(self.lds_dir, "lds.yaml"))  # atomic: Envoy sees the move

    def config_doc(self) -> dict:
        self.lds_dir = os.path.join(self.workdir, "lds")
        os.mkdir(self.lds_dir)
        with socket.socket() as s:  # a fixed port, so that listener updates keep the address
            s.bind(("127.0.0.1", 0))
            self.fixed_port = s.getsockname()[1]
        self.write_listener(self.plugin_config)
        doc = harness.build_config(None, self.cluster_ports, self.extra_env_keys)
        del doc["static_resources"]["listeners"]
        doc["node"] = {"id": "llm-router-test", "cluster": "llm-router-test"}
        doc["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3", "path_config_source": {
            "path": os.path.join(self.lds_dir, "lds.yaml"), "watched_directory": {"path": self.lds_dir}}}}
        return doc

    def lds_stat(self, name: str) -> int:
        status, body = self.admin_get("/stats?filter=^listener_manager\\.lds\\." + name + "$")
        assert status == 200, body
        return int(body.split(":", 1)[1])

    def wait_stat(self, name: str, value: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.lds_stat(name) < value:
            assert time.monotonic() < deadline, "lds.%s never reached %d\n%s" % (name, value, self.log_tail())
            time.sleep(0.05)


def test_bad_config_over_lds_keeps_last_good_config(mock_a, mock_b):
    """A listener update with a bad plugin config is rejected naming the field; the old config keeps routing."""
    good = bundled_plugin_config()
    with LdsRouter(mock_a=mock_a, mock_b=mock_b, plugin_config=good, env={"MOCK_API_KEY": MOCK_KEY},
                   concurrency=1, name="lds") as r:
        def route_fast():
            resp = httpx.post(r.url + CHAT, json=chat("hello", model="fast"), timeout=10)
            assert resp.status_code == 200, resp.text
            return router_headers(resp)

        assert route_fast()["x-llm-router-upstream"] == "mock-a"
        assert r.lds_stat("update_success") == 1 and r.lds_stat("update_rejected") == 0

        # A bad update that would also have moved `fast` to mock-b.
        bad = copy.deepcopy(good)
        bad["models"]["fast"]["targets"] = [{"upstream": "mock-b", "model": "moved"},
                                            {"upstream": "mock-z", "model": "x"}]
        r.write_listener(bad)
        r.wait_stat("update_rejected", 1)
        assert r.lds_stat("update_success") == 1
        log = open(r.log_path, encoding="utf-8", errors="replace").read()
        assert "invalid plugin configuration: models.fast.targets[1].upstream: unknown upstream `mock-z`" in log, \
            r.log_tail()
        for _ in range(3):
            h = route_fast()
            assert (h["x-llm-router-upstream"], h["x-llm-router-model"]) == ("mock-a", "mock-small"), h
        assert all(q.json()["model"] == "mock-small" for q in mock_a.requests)
        assert mock_b.requests == []

        # The control case: the same change without the error is applied.
        fixed = copy.deepcopy(bad)
        fixed["models"]["fast"]["targets"].pop()
        r.write_listener(fixed)
        r.wait_stat("update_success", 2)
        deadline = time.monotonic() + 10
        while route_fast()["x-llm-router-upstream"] != "mock-b":
            assert time.monotonic() < deadline, "the good update never took effect\n" + r.log_tail()
            time.sleep(0.05)
        assert mock_b.requests[-1].json()["model"] == "moved"
