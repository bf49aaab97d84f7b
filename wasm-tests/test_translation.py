"""Requests translated between the OpenAI and Anthropic APIs (``upstreams.*.format``), with the
official SDKs as clients: the OpenAI SDK to an Anthropic-format provider (mock-a answers
``/v1/messages`` as Anthropic does) and the Anthropic SDK to an OpenAI-format one (mock-b);
whole answers, streams, a tool-use round trip, an image, a refused field and a provider's
error, each parsed by the SDK's own types.
"""

from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from conftest import MOCK_KEY

CONFIG = {
    "upstreams": {
        "claude": {"cluster": "mock-a", "format": "anthropic", "default_max_tokens": 333,
                   "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
        "gpt": {"cluster": "mock-b", "format": "openai", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    },
    "models": {
        "claude": {"targets": [{"upstream": "claude", "model": "mock-claude"}]},
        "gpt": {"targets": [{"upstream": "gpt", "model": "mock-gpt"}]},
    },
    "default": {"use_model": "claude"},
}


@pytest.fixture(scope="module")
def router(_mock_a, _mock_b):
    from harness import EnvoyRouter
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, plugin_config=CONFIG, env={"MOCK_API_KEY": MOCK_KEY},
                     name="translation") as r:
        yield r


def oa(router) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key="sk-client", max_retries=0, timeout=10)


def an(router) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=router.url, api_key="sk-client", max_retries=0, timeout=10)


def test_openai_sdk_to_an_anthropic_provider(router, mock_a, mock_b):
    completion = oa(router).chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Say hello."}])
    rec = mock_a.requests[-1]
    assert rec.path == "/v1/messages"
    sent = json.loads(rec.body)
    assert sent["model"] == "mock-claude" and sent["max_tokens"] == 333
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    assert rec.header("anthropic-version") == "2023-06-01" and rec.header("x-api-key") == MOCK_KEY
    assert rec.header("authorization") is None
    assert completion.object == "chat.completion"
    assert "mock-a" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0


def test_openai_sdk_streams_from_an_anthropic_provider(router, mock_a):
    stream = oa(router).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Say hello."}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert json.loads(mock_a.requests[-1].body)["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "mock-a" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_anthropic_sdk_to_an_openai_provider_whole_and_streamed(router, mock_b):
    client = an(router)
    message = client.messages.create(model="gpt", max_tokens=50, system="Be brief.",
                                     messages=[{"role": "user", "content": "Say hello."}])
    rec = mock_b.requests[-1]
    assert rec.path == "/v1/chat/completions"
    sent = json.loads(rec.body)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello."}]
    assert sent["max_tokens"] == 50 and rec.header("anthropic-version") is None
    assert message.type == "message" and "mock-b" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with client.messages.stream(model="gpt", max_tokens=50,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert json.loads(mock_b.requests[-1].body)["stream_options"] == {"include_usage": True}
    assert "mock-b" in text and final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


def test_a_tool_use_round_trip_and_an_image(router, mock_a):
    mock_a.set_response(200, {
        "id": "msg_t", "type": "message", "role": "assistant", "model": "mock-claude",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 8}},
        times=1)
    tools = [{"type": "function", "function": {"name": "get_weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = oa(router).chat.completions.create(model="claude", tools=tools, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    sent = json.loads(mock_a.requests[-1].body)
    assert sent["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert sent["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_9", "get_weather", {"city": "Oslo"})
    oa(router).chat.completions.create(model="claude", tools=tools, messages=[
        {"role": "user", "content": "Weather here?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "12 C"}])
    sent = json.loads(mock_a.requests[-1].body)
    assert sent["messages"][1]["content"][0] == {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                                 "input": {"city": "Oslo"}}
    assert sent["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_9", "content": "12 C"}]}


def test_an_untranslatable_field_is_refused_by_name(router, mock_a):
    with pytest.raises(openai.BadRequestError) as e:
        oa(router).chat.completions.create(model="claude", n=2, messages=[{"role": "user", "content": "x"}])
    assert "`n`" in e.value.message and e.value.code == "untranslatable_field"
    assert mock_a.requests == []


def test_provider_errors_come_back_in_the_clients_shape(router, mock_a, mock_b):
    mock_a.set_response(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
                        times=1)
    with pytest.raises(openai.RateLimitError) as e:
        oa(router).chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert "Slow down" in e.value.message
    mock_b.set_response(503, {"error": {"message": "Overloaded here", "type": "server_error"}}, times=1)
    with pytest.raises(anthropic.InternalServerError) as e:
        an(router).messages.create(model="gpt", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"] == {"type": "api_error", "message": "Overloaded here"}


def test_the_routers_own_errors_take_the_anthropic_shape_on_messages(router):
    with pytest.raises(anthropic.NotFoundError) as e:
        an(router).messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in e.value.body["error"]["message"]
    # Chat clients keep OpenAI's.
    with pytest.raises(openai.NotFoundError) as e:
        oa(router).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_anthropic_sdk_tool_use_round_trip_and_image_to_an_openai_provider(router, mock_b):
    mock_b.set_response(200, {
        "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "mock-gpt",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_7", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}, times=1)
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    client = an(router)
    first = client.messages.create(model="gpt", max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    sent = json.loads(mock_b.requests[-1].body)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert sent["messages"][0]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert (use.type, use.id, use.name, use.input) == ("tool_use", "call_7", "get_weather", {"city": "Oslo"})
    client.messages.create(model="gpt", max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": "Weather here?"},
        {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_7", "content": "12 C"}]}])
    sent = json.loads(mock_b.requests[-1].body)
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_7"
    assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_7", "content": "12 C"}


def test_usage_of_a_translated_request_reaches_the_access_log(router, mock_a):
    """The usage is read from the provider's own answer (Anthropic's input/output tokens) and
    logged as for any request."""
    time.sleep(0.3)
    before = len(router.access_log(0))
    completion = oa(router).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Say hello."}])
    line = router.access_log(before + 1)[before]
    assert (line["endpoint"], line["target"], line["status"]) == ("chat", "claude/mock-claude", 200)
    assert line["prompt_tokens"] == completion.usage.prompt_tokens > 0
    assert line["completion_tokens"] == completion.usage.completion_tokens > 0


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


def test_structured_output_both_ways(router, mock_a, mock_b):
    """OpenAI's `response_format` json_schema and Anthropic's `output_config.format`: the same
    schema reaches the provider in its own API, and the JSON answer comes back as text."""
    mock_a.set_response(200, {
        "id": "msg_j", "type": "message", "role": "assistant", "model": "mock-claude",
        "content": [{"type": "text", "text": "{\"city\": \"Oslo\"}"}],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 4}}, times=1)
    completion = oa(router).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Where?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "strict": True, "schema": SCHEMA}})
    sent = json.loads(mock_a.requests[-1].body)
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "response_format" not in sent
    assert json.loads(completion.choices[0].message.content) == {"city": "Oslo"}

    mock_b.set_response(200, {
        "id": "chatcmpl-j", "object": "chat.completion", "created": 1, "model": "mock-gpt",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "{\"city\": \"Oslo\"}"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}, times=1)
    message = an(router).messages.create(
        model="gpt", max_tokens=50, messages=[{"role": "user", "content": "Where?"}],
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    sent = json.loads(mock_b.requests[-1].body)
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}
    assert "output_config" not in sent
    assert json.loads(message.content[0].text) == {"city": "Oslo"}

    # JSON without a schema has no Anthropic equivalent; nor has `effort` an OpenAI one.
    with pytest.raises(openai.BadRequestError) as e:
        oa(router).chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}],
                                           response_format={"type": "json_object"})
    assert "`response_format`" in e.value.message and "json_object" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        an(router).messages.create(model="gpt", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                                   output_config={"effort": "high"})
    assert "`output_config.effort`" in e.value.body["error"]["message"]
