//! The mapping tables of `request` and `response`, both ways, and the refusals.

use serde_json::{json, Map, Value};

use super::request::{anthropic_to_openai, openai_to_anthropic};
use super::{error_body, response, Format};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn to_anthropic(v: Value) -> Value {
    Value::Object(openai_to_anthropic(&obj(v), 4096).expect("translates"))
}

fn to_openai(v: Value) -> Value {
    Value::Object(anthropic_to_openai(&obj(v)).expect("translates"))
}

fn refused_toward_anthropic(v: Value) -> String {
    openai_to_anthropic(&obj(v), 4096)
        .expect_err("refused")
        .field
}

fn refused_toward_openai(v: Value) -> String {
    anthropic_to_openai(&obj(v)).expect_err("refused").field
}

#[test]
fn an_openai_conversation_with_tools_and_images_becomes_anthropic() {
    let got = to_anthropic(json!({
        "model": "claude-x", "temperature": 0.5, "top_p": 0.9, "stream": true,
        "stream_options": {"include_usage": true}, "stop": "END", "user": "u-1",
        "max_completion_tokens": 300, "n": 1, "parallel_tool_calls": false, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
            {"role": "user", "content": "Thanks"}
        ]
    }));
    assert_eq!(
        got,
        json!({
            "model": "claude-x", "temperature": 0.5, "top_p": 0.9, "stream": true,
            "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}, "max_tokens": 300,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "tools": [{"name": "get_weather", "description": "d",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                // The tool result and the next user message: one user turn (turns alternate).
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "12 C"},
                    {"type": "text", "text": "Thanks"}]}
            ]
        })
    );
}

#[test]
fn anthropic_needs_an_output_limit_and_gets_the_configured_one() {
    let got = to_anthropic(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(got["max_tokens"], 4096);
    let got = to_anthropic(json!({"model": "m", "max_tokens": 7, "messages": []}));
    assert_eq!(got["max_tokens"], 7);
    let choice = |c: Value| {
        to_anthropic(json!({"model": "m", "tool_choice": c, "messages": []}))["tool_choice"].clone()
    };
    assert_eq!(choice(json!("auto")), json!({"type": "auto"}));
    assert_eq!(choice(json!("none")), json!({"type": "none"}));
    assert_eq!(
        choice(json!({"type": "function", "function": {"name": "f"}})),
        json!({"type": "tool", "name": "f"})
    );
}

#[test]
fn what_anthropic_cannot_express_is_refused_by_name() {
    let base = |extra: Value| {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in obj(extra) {
            v[k] = x;
        }
        v
    };
    assert_eq!(refused_toward_anthropic(base(json!({"n": 2}))), "n");
    assert_eq!(
        refused_toward_anthropic(base(json!({"logprobs": true}))),
        "logprobs"
    );
    assert_eq!(refused_toward_anthropic(base(json!({"seed": 1}))), "seed");
    assert_eq!(
        refused_toward_anthropic(base(json!({"temperature": 1.5}))),
        "temperature"
    );
    assert_eq!(
        refused_toward_anthropic(base(json!({"response_format": {"type": "json_object"}}))),
        "response_format"
    );
    assert_eq!(
        refused_toward_anthropic(base(json!({"tools": [{"type": "web_search"}]}))),
        "tools[0].type"
    );
    assert_eq!(
        refused_toward_anthropic(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]})),
        "messages[1].role"
    );
    assert_eq!(
        refused_toward_anthropic(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]})),
        "messages[0].content[0].type"
    );
    assert_eq!(
        refused_toward_anthropic(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]})),
        "messages[0].content[0].image_url.url"
    );
    assert_eq!(
        refused_toward_anthropic(
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]})
        ),
        "messages[0].tool_calls[0].function.arguments"
    );
    // Defaults and OpenAI's stored-completion fields are dropped, not refused.
    let got = to_anthropic(base(
        json!({"n": 1, "response_format": {"type": "text"}, "store": false,
                                       "metadata": {"k": "v"}}),
    ));
    assert!(got.get("n").is_none() && got.get("store").is_none());
}

#[test]
fn an_anthropic_conversation_becomes_openai() {
    let got = to_openai(json!({
        "model": "gpt-x", "max_tokens": 100, "stream": true, "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"}, "temperature": 0.2,
        "system": [{"type": "text", "text": "Be brief."}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "12 C"}]},
                {"type": "text", "text": "Thanks"}]}
        ]
    }));
    assert_eq!(
        got,
        json!({
            "model": "gpt-x", "max_tokens": 100, "stream": true,
            "stream_options": {"include_usage": true}, "stop": ["END"], "user": "u-1", "temperature": 0.2,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                         "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C"},
                {"role": "user", "content": "Thanks"}
            ]
        })
    );
    let refused = |extra: Value, field: &str| {
        let mut v =
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in obj(extra) {
            v[k] = x;
        }
        assert_eq!(refused_toward_openai(v), field);
    };
    refused(json!({"top_k": 5}), "top_k");
    refused(
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        "thinking",
    );
    refused(
        json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        "tools[0].type",
    );
    refused(
        json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
        "messages[0].content[0].type",
    );
}

#[test]
fn translated_twice_a_request_says_what_it_said() {
    let openai = json!({"model": "m", "max_tokens": 50, "temperature": 0.3, "stop": ["x"],
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]});
    let back = to_openai(to_anthropic(openai.clone()));
    assert_eq!(
        back["messages"],
        json!([
        {"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}])
    );
    for key in ["model", "max_tokens", "temperature", "stop"] {
        assert_eq!(back[key], openai[key], "{key}");
    }
}

#[test]
fn whole_answers_map_content_tool_calls_stop_reasons_and_usage() {
    let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5,
                  "output_tokens": 20}});
    let got = response::anthropic_to_openai(&msg, 1_700_000_000);
    assert_eq!(got["object"], "chat.completion");
    assert_eq!(got["created"], 1_700_000_000u64);
    assert_eq!(got["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(
        got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(
        got["usage"],
        json!({"prompt_tokens": 105, "completion_tokens": 20, "total_tokens": 125,
                                    "prompt_tokens_details": {"cached_tokens": 90}})
    );
    let back = response::openai_to_anthropic(&got);
    assert_eq!(back["content"], msg["content"]);
    assert_eq!(back["stop_reason"], "tool_use");
    // The cache writes count as input on the way back: OpenAI has no field for them.
    assert_eq!(
        back["usage"],
        json!({"input_tokens": 15, "output_tokens": 20, "cache_read_input_tokens": 90})
    );
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(response::finish_reason(Some(stop)), json!(finish));
    }
    let refusal = json!({"id": "c", "model": "gpt-x", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
    let got = response::openai_to_anthropic(&refusal);
    assert_eq!(got["stop_reason"], "refusal");
    assert_eq!(
        got["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
}

#[test]
fn provider_errors_take_the_clients_shape() {
    let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        error_body(429, openai, Format::Anthropic),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
    );
    let anthropic =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(
        error_body(529, anthropic, Format::OpenAi),
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                                "code": "overloaded_error"}})
    );
    // Not JSON: the text is the message.
    assert_eq!(
        error_body(502, b"upstream connect error", Format::Anthropic)["error"]["message"],
        "upstream connect error"
    );
}

use super::stream::{AnthropicToOpenAi, Events, OpenAiToAnthropic};

/// An Anthropic stream as Anthropic sends it: text, then a tool use in two JSON pieces.
const ANTHROPIC_STREAM: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hé\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"llo\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// An OpenAI stream with usage: text, then a tool call in two argument pieces.
const OPENAI_STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":15,\"completion_tokens\":9,\"total_tokens\":24,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n\
data: [DONE]\n\n";

fn events_of(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut e = Events::default();
    let events = e.push(bytes).expect("bounded");
    events
        .into_iter()
        .map(|ev| {
            (
                ev.name,
                serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data)),
            )
        })
        .collect()
}

#[test]
fn an_anthropic_stream_becomes_openai_chunks_at_every_byte_split() {
    let whole = {
        let mut t = AnthropicToOpenAi::new(1_700_000_000, true);
        t.push(ANTHROPIC_STREAM.as_bytes())
    };
    let bytes = ANTHROPIC_STREAM.as_bytes();
    for split in 1..bytes.len() {
        let mut t = AnthropicToOpenAi::new(1_700_000_000, true);
        let mut out = t.push(&bytes[..split]);
        out.extend(t.push(&bytes[split..]));
        assert_eq!(out, whole, "split at {split}");
    }
    let chunks = events_of(&whole);
    let text: String = chunks
        .iter()
        .filter_map(|(_, c)| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "Héllo");
    let args: String = chunks
        .iter()
        .filter_map(|(_, c)| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(args, "{\"a\":1}");
    assert_eq!(chunks[0].1["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .any(|(_, c)| c.pointer("/choices/0/delta/tool_calls/0/id") == Some(&json!("toolu_1"))));
    assert!(chunks
        .iter()
        .any(|(_, c)| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))));
    let usage = chunks
        .iter()
        .find_map(|(_, c)| c.get("usage"))
        .expect("a usage chunk");
    assert_eq!(
        usage,
        &json!({"prompt_tokens": 15, "completion_tokens": 9, "total_tokens": 24,
                "prompt_tokens_details": {"cached_tokens": 3}})
    );
    assert_eq!(chunks.last().map(|(_, c)| c.clone()), Some(json!("[DONE]")));
    assert!(chunks
        .iter()
        .all(|(_, c)| c == "[DONE]" || c["object"] == "chat.completion.chunk"));
}

#[test]
fn an_openai_stream_becomes_anthropic_events_at_every_byte_split() {
    let whole = OpenAiToAnthropic::new().push(OPENAI_STREAM.as_bytes(), true);
    let bytes = OPENAI_STREAM.as_bytes();
    for split in 1..bytes.len() {
        let mut t = OpenAiToAnthropic::new();
        let mut out = t.push(&bytes[..split], false);
        out.extend(t.push(&bytes[split..], true));
        assert_eq!(out, whole, "split at {split}");
    }
    let events = events_of(&whole);
    let names: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // Each event's type is its name, as Anthropic's SDKs expect.
    assert!(events
        .iter()
        .all(|(n, v)| n.as_deref() == v["type"].as_str()));
    assert_eq!(
        events[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
    );
    let json_args: String = events
        .iter()
        .filter_map(|(_, v)| v.pointer("/delta/partial_json").and_then(Value::as_str))
        .collect();
    assert_eq!(json_args, "{\"a\":1}");
    assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        events[9].1["usage"],
        json!({"input_tokens": 12, "output_tokens": 9, "cache_read_input_tokens": 3})
    );
    // A stream cut off without [DONE] is finished at its end.
    let cut = &bytes[..bytes.len() - "data: [DONE]\n\n".len()];
    let out = OpenAiToAnthropic::new().push(cut, true);
    assert_eq!(out, whole);
}

#[test]
fn an_oversized_event_ends_the_translation_with_an_error() {
    let mut t = OpenAiToAnthropic::new();
    let big = vec![b'x'; super::stream::MAX_EVENT_BYTES + 1];
    let out = t.push(&big, false);
    assert!(String::from_utf8_lossy(&out).starts_with("event: error\n"));
    assert!(t.push(b"data: {}\n\n", true).is_empty());
}

#[test]
fn an_event_in_one_byte_chunks_is_scanned_once() {
    // 200 KB in 1-byte pushes: a rescan from the start on every push would take minutes.
    let event = format!("data: {{\"pad\":\"{}\"}}\n\n", "x".repeat(200_000));
    let mut e = Events::default();
    let mut got = Vec::new();
    for b in event.as_bytes() {
        got.extend(e.push(std::slice::from_ref(b)).expect("bounded"));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data.len(), event.len() - "data: \n\n".len());
}

#[test]
fn json_output_maps_where_both_apis_can_express_it() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    let messages = json!([{"role": "user", "content": "hi"}]);
    // OpenAI's json_schema is Anthropic's structured output (the schema only).
    let got = to_anthropic(
        json!({"model": "m", "messages": messages, "response_format": {
        "type": "json_schema", "json_schema": {"name": "place", "strict": true, "schema": schema}}}),
    );
    assert_eq!(
        got["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    // And back, strict (Anthropic's output always follows the schema).
    let strict = json!({"type": "json_schema",
                        "json_schema": {"name": "output", "schema": schema, "strict": true}});
    let got = to_openai(json!({"model": "m", "max_tokens": 5, "messages": messages,
        "output_config": {"format": {"type": "json_schema", "schema": schema}}}));
    assert_eq!(got["response_format"], strict);
    let got = to_openai(json!({"model": "m", "max_tokens": 5, "messages": messages,
        "output_format": {"type": "json_schema", "schema": schema}}));
    assert_eq!(got["response_format"], strict);
    let got = to_openai(json!({"model": "m", "max_tokens": 5, "messages": messages,
        "output_config": {"format": null}}));
    assert!(got.get("response_format").is_none());
    // What one side cannot say is refused, naming the field.
    let base = |k: &str, v: Value| {
        let mut b = json!({"model": "m", "max_tokens": 5, "messages": messages});
        b[k] = v;
        b
    };
    for (bad, field) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
        ),
        (json!({"type": "yaml"}), "response_format.type"),
    ] {
        assert_eq!(
            refused_toward_anthropic(base("response_format", bad)),
            field
        );
    }
    for (bad, field) in [
        (json!({"effort": "high"}), "output_config.effort"),
        (
            json!({"format": {"type": "json_schema"}}),
            "output_config.format.schema",
        ),
        (
            json!({"format": {"type": "regex"}}),
            "output_config.format.type",
        ),
        (json!("json"), "output_config"),
    ] {
        assert_eq!(refused_toward_openai(base("output_config", bad)), field);
    }
}

#[test]
fn text_deltas_take_the_fast_path_and_say_what_the_slow_one_would() {
    use super::stream::{AnthropicToOpenAi, OpenAiToAnthropic};
    let text = "Say \"hi\" \\ caf\u{e9} \u{1f600}\n";
    let start = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_\"1","model":"m","usage":{"input_tokens":3}}}

"#;
    let delta = format!(
        "event: content_block_delta\ndata: {}\n\n",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
    );
    let mut t = AnthropicToOpenAi::new(7, false);
    t.push(start.as_bytes());
    let out = String::from_utf8(t.push(delta.as_bytes())).expect("UTF-8");
    let data = out
        .strip_prefix("data: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .expect("one event");
    let v: Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(
        v,
        json!({"id": "msg_\"1", "object": "chat.completion.chunk", "created": 7, "model": "m",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    );

    let chunk = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "choices": [{"index": 0, "delta": delta}]})
        )
    };
    let mut t = OpenAiToAnthropic::new();
    t.push(
        chunk(json!({"role": "assistant", "content": "a"})).as_bytes(),
        false,
    );
    let out = String::from_utf8(t.push(chunk(json!({"content": text})).as_bytes(), false))
        .expect("UTF-8");
    let data = out
        .strip_prefix("event: content_block_delta\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .expect("one event");
    let v: Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(
        v,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
    );
}

#[test]
fn a_streams_usage_is_built_like_a_whole_answers_with_message_deltas_counts_over_message_starts() {
    use super::stream::AnthropicToOpenAi;
    let stream = |delta_usage: Value| {
        format!(
            "event: message_start\ndata: {}\n\nevent: message_delta\ndata: {}\n\n",
            json!({"type": "message_start", "message": {"id": "m", "model": "x",
                   "usage": {"input_tokens": 10, "cache_read_input_tokens": 90,
                             "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage})
        )
    };
    let usage_of = |s: String| {
        let out =
            String::from_utf8(AnthropicToOpenAi::new(1, true).push(s.as_bytes())).expect("UTF-8");
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|c| c.get("usage").cloned())
            .expect("a usage chunk")
    };
    let whole = super::response::openai_usage(&json!({"input_tokens": 10,
        "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 7}));
    assert_eq!(usage_of(stream(json!({"output_tokens": 7}))), whole);
    // Newer API versions repeat the prompt's counts, cumulative, in message_delta.
    assert_eq!(
        usage_of(stream(
            json!({"input_tokens": 12, "cache_read_input_tokens": 90,
                               "cache_creation_input_tokens": 5, "output_tokens": 7})
        )),
        json!({"prompt_tokens": 107, "completion_tokens": 7, "total_tokens": 114,
               "prompt_tokens_details": {"cached_tokens": 90}})
    );
}
