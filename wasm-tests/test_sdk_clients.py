"""The official SDKs (``openai``, ``anthropic``; pinned in requirements.txt) as clients of the
real Envoy with the bundled configuration, and as judges of the mock provider: the mock's
answers (whole and streamed, OpenAI and Anthropic) parse as the SDKs' own types, so the mocks
speak the real formats the router reads and, with issue 16, translates.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from harness import router_headers

#: Any key: the bundled configuration authenticates no one (the provider key is the router's).
CLIENT_KEY = "sk-client"


def sse_data(lines: list[str]) -> list[str]:
    return [l[len("data: "):] for l in lines if l.startswith("data: ")]


def test_the_mocks_answers_parse_as_the_sdks_types(mock_a):
    """Straight to the mock: an OpenAI chat completion and its chunks, an Anthropic message
    and its stream events validate against the SDKs' models."""
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(mock_a.url + "/v1/chat/completions", json=chat, timeout=5)
    completion = ChatCompletion.model_validate(r.json())
    assert completion.usage is not None and completion.usage.total_tokens > 0
    with httpx.stream("POST", mock_a.url + "/v1/chat/completions", timeout=5,
                      json=dict(chat, stream=True, stream_options={"include_usage": True})) as s:
        data = sse_data(list(s.iter_lines()))
    assert data[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    msg = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(mock_a.url + "/v1/messages", json=msg, timeout=5)
    message = Message.model_validate(r.json())
    assert message.usage.output_tokens > 0
    with httpx.stream("POST", mock_a.url + "/v1/messages", json=dict(msg, stream=True), timeout=5) as s:
        data = sse_data(list(s.iter_lines()))
    events = [TypeAdapter(RawMessageStreamEvent).validate_json(d) for d in data]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


def test_the_openai_sdk_through_the_router(bundled, mock_a, mock_b):
    client = openai.OpenAI(base_url=bundled.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello."}])
    completion = raw.parse()
    assert "mock-a" in (completion.choices[0].message.content or "")
    assert raw.headers["x-llm-router-model"] == "mock-small"
    assert mock_a.requests[-1].header("authorization") == "Bearer test-mock-key"
    # Streamed, with usage: the SDK reads every chunk the router passed on.
    stream = client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "Say hello."}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "mock-b" in text and "model=mock-large" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_the_openai_sdk_gets_the_routers_errors_as_its_exceptions(bundled):
    client = openai.OpenAI(base_url=bundled.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and e.value.code == "model_not_found"


def test_the_anthropic_sdk_through_the_router(bundled, mock_a, mock_b):
    client = anthropic.Anthropic(base_url=bundled.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    raw = client.messages.with_raw_response.create(
        model="smart", max_tokens=64, messages=[{"role": "user", "content": "Say hello."}])
    message = raw.parse()
    assert message.type == "message" and "mock-b" in message.content[0].text
    assert router_headers(raw)["x-llm-router-model"] == "mock-large"
    rec = mock_b.requests[-1]
    assert rec.header("x-api-key") == "test-mock-key" and rec.header("anthropic-version")
    with client.messages.stream(model="auto", max_tokens=64,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "mock-a" in text and final.usage.output_tokens > 0
