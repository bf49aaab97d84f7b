"""Failover across APIs: one alias whose candidates speak different APIs (``upstreams.*.format``).

mock-a speaks Anthropic's Messages API, mock-b OpenAI's. The request filter sends the client's
body through the failover cluster; the attempt filter translates each attempt for its own
target (attempt 1 too, when that target speaks the other API); the request filter translates
the answer of whichever attempt served back into the client's API. The clients are the
official SDKs, so what they parse is the real format.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import MOCK_KEY

CONFIG = {
    "upstreams": {
        "claude": {"cluster": "mock-a", "format": "anthropic", "default_max_tokens": 222,
                   "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        "gpt": {"cluster": "mock-b", "format": "openai", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    },
    "models": {
        # The Anthropic-format candidate first, then the OpenAI-format one.
        "claude-first": {"targets": [{"upstream": "claude", "model": "mock-claude"},
                                     {"upstream": "gpt", "model": "mock-gpt"}]},
        "gpt-first": {"targets": [{"upstream": "gpt", "model": "mock-gpt"},
                                  {"upstream": "claude", "model": "mock-claude"}]},
    },
    "default": {"use_model": "gpt-first"},
    "health": {"allowed_fails": 100, "cooldown_seconds": 1, "failure_rate": None},
    "failover": {"cluster": "llm_failover", "max_attempts": 2},
}

INTERNAL = ("x-llm-router-failover", "x-llm-router-path", "x-llm-router-authority", "x-llm-router-cluster")
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
#: The `anthropic-version` the Anthropic SDK sends (it reaches Anthropic-format attempts as sent).
SDK_VERSION = anthropic.Anthropic(api_key="x").default_headers["anthropic-version"]
OPENAI_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    from harness import EnvoyRouter
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG, env={"MOCK_API_KEY": MOCK_KEY},
                     concurrency=2, name="translation-failover") as r:
        yield r


def oa(router) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key="sk-client", max_retries=0, timeout=10)


def an(router) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=router.url, api_key="sk-client", max_retries=0, timeout=10)


def check_anthropic_request(rec, translated: bool = True) -> dict:
    """What an Anthropic-format provider must see: its API, path and credential only; a
    translated request (from an OpenAI client) the router's version and content blocks, an
    Anthropic client's its SDK's own."""
    assert rec.path == "/v1/messages"
    assert rec.header("x-api-key") == MOCK_KEY and rec.header("authorization") is None
    assert rec.header("anthropic-version") == ("2023-06-01" if translated else SDK_VERSION)
    for name in INTERNAL:
        assert rec.header(name) is None, name
    sent = json.loads(rec.body)
    assert sent["model"] == "mock-claude" and isinstance(sent["max_tokens"], int)
    if translated:
        assert all(isinstance(m["content"], list) for m in sent["messages"])
    return sent


def check_openai_request(rec) -> dict:
    assert rec.path == "/v1/chat/completions"
    assert rec.header("authorization") == "Bearer " + MOCK_KEY and rec.header("x-api-key") is None
    for name in INTERNAL:
        assert rec.header(name) is None, name
    assert rec.header("content-length") == str(len(rec.body))
    sent = json.loads(rec.body)
    assert sent["model"] == "mock-gpt"
    return sent


@pytest.mark.core
def test_openai_client_fails_over_from_an_anthropic_provider_to_an_openai_one(router, mock_a, mock_b):
    mock_a.set_response(529, ANTHROPIC_ERROR, times=1)
    raw = oa(router).chat.completions.with_raw_response.create(
        model="claude-first", messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Say hello."}])
    completion = raw.parse()
    assert raw.headers["x-llm-router-attempts"] == "2" and raw.headers["x-llm-router-upstream"] == "gpt"
    [ra] = mock_a.requests
    sent = check_anthropic_request(ra)
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["max_tokens"] == 222
    [rb] = mock_b.requests
    sent = check_openai_request(rb)
    # The OpenAI-format attempt gets the client's own request, model replaced.
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    assert "max_tokens" not in sent
    assert completion.object == "chat.completion" and "mock-b" in completion.choices[0].message.content


@pytest.mark.core
def test_openai_client_fails_over_to_an_anthropic_provider_whole_and_streamed(router, mock_a, mock_b):
    mock_b.set_response(500, OPENAI_ERROR, times=1)
    raw = oa(router).chat.completions.with_raw_response.create(
        model="gpt-first", messages=[{"role": "user", "content": "Say hello."}])
    completion = raw.parse()
    assert raw.headers["x-llm-router-attempts"] == "2" and raw.headers["x-llm-router-upstream"] == "claude"
    check_openai_request(mock_b.requests[-1])
    check_anthropic_request(mock_a.requests[-1])
    assert completion.object == "chat.completion" and "mock-a" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop" and completion.usage.completion_tokens > 0

    mock_b.set_response(503, OPENAI_ERROR, times=1)
    stream = oa(router).chat.completions.create(
        model="gpt-first", messages=[{"role": "user", "content": "Say hello."}], stream=True)
    chunks = list(stream)
    sent = check_anthropic_request(mock_a.requests[-1])
    assert sent["stream"] is True and "stream_options" not in sent
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "mock-a" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    # The client did not ask for the usage chunk: none.
    assert all(c.usage is None for c in chunks)


@pytest.mark.core
def test_anthropic_client_fails_over_to_an_openai_provider_whole_and_streamed(router, mock_a, mock_b):
    mock_a.set_response(529, ANTHROPIC_ERROR, times=1)
    client = an(router)
    message = client.messages.create(model="claude-first", max_tokens=40, system="Be brief.",
                                     messages=[{"role": "user", "content": "Say hello."}])
    # The Anthropic-format attempt got the client's own request, model replaced.
    sent = check_anthropic_request(mock_a.requests[-1], translated=False)
    assert sent["max_tokens"] == 40 and sent["system"] == "Be brief."
    sent = check_openai_request(mock_b.requests[-1])
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 40
    assert message.type == "message" and "mock-b" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0

    mock_a.set_response(529, ANTHROPIC_ERROR, times=1)
    with client.messages.stream(model="claude-first", max_tokens=40,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    sent = check_openai_request(mock_b.requests[-1])
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "mock-b" in text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_an_anthropic_client_translated_first_then_in_its_own_api(router, mock_a, mock_b):
    mock_b.set_response(500, OPENAI_ERROR, times=1)
    message = an(router).messages.create(
        model="gpt-first", max_tokens=30, messages=[{"role": "user", "content": "Say hello."}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    check_openai_request(mock_b.requests[-1])
    ra = mock_a.requests[-1]
    sent = check_anthropic_request(ra, translated=False)
    # The client's own request and Anthropic headers reach the attempt in its own API.
    assert ra.header("anthropic-beta") == "prompt-caching-2024-07-31"
    assert sent["messages"] == [{"role": "user", "content": "Say hello."}] and sent["max_tokens"] == 30
    assert "mock-a" in message.content[0].text


def test_when_every_attempt_fails_the_last_error_comes_in_the_clients_shape(router, mock_a, mock_b):
    mock_b.set_response(500, OPENAI_ERROR, times=1)
    mock_a.set_response(529, ANTHROPIC_ERROR, times=1)
    with pytest.raises(openai.APIStatusError) as e:
        oa(router).chat.completions.create(model="gpt-first", messages=[{"role": "user", "content": "x"}])
    check_openai_request(mock_b.requests[-1])
    check_anthropic_request(mock_a.requests[-1])
    assert e.value.status_code == 529
    # The Anthropic provider's error, as OpenAI writes one.
    assert e.value.response.json() == {"error": {"message": "Overloaded", "type": "server_error",
                                                 "param": None, "code": "overloaded_error"}}
    assert e.value.response.headers["x-llm-router-upstream"] == "claude"


def test_a_candidate_that_cannot_take_the_request_is_left_out(router, mock_a, mock_b):
    # `seed` has no equivalent in Anthropic's API: the OpenAI-format candidate only.
    mock_b.set_response(500, OPENAI_ERROR, times=1)
    with pytest.raises(openai.InternalServerError):
        oa(router).chat.completions.create(model="gpt-first", seed=7, messages=[{"role": "user", "content": "x"}])
    assert mock_a.requests == [] and len(mock_b.requests) == 1
    raw = oa(router).chat.completions.with_raw_response.create(
        model="claude-first", seed=7, messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-llm-router-upstream"] == "gpt" and raw.headers["x-llm-router-attempts"] == "1"
    assert mock_a.requests == []
