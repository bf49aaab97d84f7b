//! Whole (non-streaming) answers, both ways: content and tool calls, the stop reason, the
//! usage (Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI counts
//! them inside `prompt_tokens`), the id and the model.
//!
//! | Anthropic `stop_reason` | OpenAI `finish_reason` |
//! |---|---|
//! | `end_turn`, `stop_sequence`, `pause_turn` | `stop` |
//! | `max_tokens` | `length` |
//! | `tool_use` | `tool_calls` |
//! | `refusal` | `content_filter` |

use serde_json::{json, Map, Value};

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

pub fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        _ => Value::Null,
    }
}

pub fn stop_reason(finish_reason: Option<&str>) -> Value {
    match finish_reason {
        Some("stop") => json!("end_turn"),
        Some("length") => json!("max_tokens"),
        Some("tool_calls" | "function_call") => json!("tool_use"),
        Some("content_filter") => json!("refusal"),
        _ => Value::Null,
    }
}

/// An Anthropic `tool_use` block as an OpenAI tool call (its input as a JSON string): in
/// answers, and in the assistant turns of requests.
pub fn tool_call(block: &Value) -> Value {
    let args = block
        .get("input")
        .map_or_else(|| "{}".to_owned(), Value::to_string);
    json!({"id": block.get("id"), "type": "function",
           "function": {"name": block.get("name"), "arguments": args}})
}

/// Anthropic's usage as OpenAI's.
pub fn openai_usage(usage: &Value) -> Value {
    let input = u64_at(usage, "/input_tokens");
    let read = u64_at(usage, "/cache_read_input_tokens");
    let created = u64_at(usage, "/cache_creation_input_tokens");
    let output = u64_at(usage, "/output_tokens");
    let prompt = input + read + created;
    json!({"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
           "prompt_tokens_details": {"cached_tokens": read}})
}

/// OpenAI's usage as Anthropic's.
pub fn anthropic_usage(usage: &Value) -> Value {
    let prompt = u64_at(usage, "/prompt_tokens");
    let cached = u64_at(usage, "/prompt_tokens_details/cached_tokens").min(prompt);
    json!({"input_tokens": prompt - cached, "output_tokens": u64_at(usage, "/completion_tokens"),
           "cache_read_input_tokens": cached})
}

/// An Anthropic message as an OpenAI chat completion (`created`: the Unix time to give it).
pub fn anthropic_to_openai(msg: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in msg
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(tool_call(block)),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".to_owned(), json!("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    message.insert("content".to_owned(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    let stop = msg.get("stop_reason").and_then(Value::as_str);
    json!({
        "id": msg.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(stop),
                     "logprobs": null}],
        "usage": openai_usage(msg.get("usage").unwrap_or(&Value::Null)),
    })
}

/// An OpenAI chat completion (its first choice) as an Anthropic message.
pub fn openai_to_anthropic(completion: &Value) -> Value {
    let choice = completion.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .or_else(|| message.get("refusal").and_then(Value::as_str));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        // Arguments a model wrote that are not JSON stay as text in an object.
        let input = serde_json::from_str::<Value>(args)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({"arguments": args}));
        content.push(json!({"type": "tool_use", "id": call.get("id"),
                            "name": call.pointer("/function/name"), "input": input}));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let refused = message.get("refusal").and_then(Value::as_str).is_some();
    let stop = if refused {
        json!("refusal")
    } else {
        stop_reason(finish)
    };
    json!({
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage(completion.get("usage").unwrap_or(&Value::Null)),
    })
}
