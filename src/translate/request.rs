//! Requests, both ways. What maps to what (anything not listed is refused, naming it):
//!
//! | OpenAI Chat Completions | Anthropic Messages |
//! |---|---|
//! | leading `system` / `developer` messages | `system` (text blocks, in order) |
//! | `user` / `assistant` messages, string or text parts | `user` / `assistant`, text blocks |
//! | `image_url` part: `data:` URL / http(s) URL | `image` block: `base64` / `url` source |
//! | assistant `tool_calls` (arguments: a JSON string) | `tool_use` blocks (`input`: the object) |
//! | `tool` messages (`tool_call_id`, content) | `tool_result` blocks in one `user` turn |
//! | `tools[].function` (`name`, `description`, `parameters`) | `tools[]` (`name`, `description`, `input_schema`) |
//! | `tool_choice` `auto` / `none` / `required` / a function | `auto` / `none` / `any` / `tool` |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `max_completion_tokens`, else `max_tokens`, else the configured default | `max_tokens` |
//! | `stop` (string or list) | `stop_sequences` |
//! | `temperature` (0 to 1 only: Anthropic's range), `top_p`, `stream` | the same |
//! | `user` | `metadata.user_id` |
//! | `stream_options` | dropped toward Anthropic (its stream always reports usage); added toward OpenAI (`include_usage`) |
//! | `response_format` `json_schema` (its `schema`; `name`, `strict` dropped) | `output_config.format` `json_schema` (or the beta's `output_format`) |
//! | `response_format: {"type": "text"}`, `n: 1` | dropped (the default) |
//! | `metadata`, `store` (OpenAI's stored completions) | dropped |
//!
//! Refused toward Anthropic: a system message after the conversation started, other parts
//! (`input_audio`, `file`), `n` > 1, `response_format` `json_object`, `logprobs`, `logit_bias`,
//! `seed`, penalties, `audio`, `modalities`, `prediction`, `reasoning_effort`, ...; toward
//! OpenAI: `top_k`, `thinking`, `output_config.effort`, documents, server tools, tool results
//! with images.

use serde_json::{json, Map, Value};

use super::{structured, Untranslatable};

type Object = Map<String, Value>;
type Result<T> = std::result::Result<T, Untranslatable>;

/// OpenAI fields that need no translation toward Anthropic when they say the default.
fn is_openai_default(key: &str, v: &Value) -> bool {
    match key {
        "n" => v.as_u64() == Some(1),
        "response_format" => v.get("type").and_then(Value::as_str) == Some("text"),
        "stream_options" | "metadata" | "store" => true,
        _ => v.is_null(),
    }
}

/// An OpenAI Chat Completions request as an Anthropic Messages request. `max_tokens`: the
/// output limit when the client set none (Anthropic requires one).
pub fn openai_to_anthropic(req: &Object, max_tokens: u64) -> Result<Object> {
    let mut out = Object::new();
    let mut limit = None;
    for (key, v) in req {
        match key.as_str() {
            "model" | "stream" | "top_p" => {
                out.insert(key.clone(), v.clone());
            }
            "messages" => {}
            "temperature" => {
                if v.as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                    return Err(Untranslatable::new(
                        key,
                        "the target model takes temperature from 0 to 1",
                    ));
                }
                out.insert(key.clone(), v.clone());
            }
            "max_tokens" | "max_completion_tokens" => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| Untranslatable::new(key, "must be a positive integer"))?;
                if key == "max_completion_tokens" || limit.is_none() {
                    limit = Some(n);
                }
            }
            "stop" => {
                let list = match v {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    Value::Null => continue,
                    _ => return Err(Untranslatable::new(key, "must be a string or a list")),
                };
                out.insert("stop_sequences".to_owned(), Value::Array(list));
            }
            "user" => {
                out.insert("metadata".to_owned(), json!({"user_id": v}));
            }
            "tools" => {
                out.insert(key.clone(), openai_tools(v)?);
            }
            "tool_choice" | "parallel_tool_calls" => {}
            "response_format" if !is_openai_default(key, v) => {
                out.insert(
                    "output_config".to_owned(),
                    structured::openai_to_anthropic(v)?,
                );
            }
            _ if is_openai_default(key, v) => {}
            _ => {
                return Err(Untranslatable::new(
                    key,
                    "has no equivalent in the Anthropic Messages API of the target",
                ))
            }
        }
    }
    if let Some(choice) = openai_tool_choice(req)? {
        out.insert("tool_choice".to_owned(), choice);
    }
    out.insert("max_tokens".to_owned(), json!(limit.unwrap_or(max_tokens)));
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be a list"))?;
    let (system, turns) = openai_messages(messages)?;
    if !system.is_empty() {
        out.insert("system".to_owned(), Value::Array(system));
    }
    out.insert("messages".to_owned(), Value::Array(turns));
    Ok(out)
}

fn openai_tools(v: &Value) -> Result<Value> {
    let list = v
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let field = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Untranslatable::new(
                format!("{field}.type"),
                "only function tools translate",
            ));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| Untranslatable::new(format!("{field}.function"), "is required"))?;
        let mut tool = Object::new();
        tool.insert(
            "name".to_owned(),
            f.get("name").cloned().unwrap_or(Value::Null),
        );
        if let Some(d) = f.get("description") {
            tool.insert("description".to_owned(), d.clone());
        }
        let schema = f
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tool.insert("input_schema".to_owned(), schema);
        out.push(Value::Object(tool));
    }
    Ok(Value::Array(out))
}

fn openai_tool_choice(req: &Object) -> Result<Option<Value>> {
    let parallel_off = req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => {
            if !parallel_off {
                return Ok(None);
            }
            json!({"type": "auto"})
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => return Err(Untranslatable::new("tool_choice", "unknown value")),
        },
        Some(v) => match v.pointer("/function/name") {
            Some(name) => json!({"type": "tool", "name": name}),
            None => return Err(Untranslatable::new("tool_choice", "names no function")),
        },
    };
    if parallel_off {
        if let Some(o) = choice.as_object_mut() {
            o.insert("disable_parallel_tool_use".to_owned(), Value::Bool(true));
        }
    }
    Ok(Some(choice))
}

/// The system blocks and the turns of an OpenAI conversation.
fn openai_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                if !turns.is_empty() {
                    return Err(Untranslatable::new(
                        format!("{field}.role"),
                        "the target takes system instructions only before the conversation",
                    ));
                }
                system.extend(text_blocks(content, &format!("{field}.content"))?);
            }
            "user" => {
                let blocks = user_blocks(content, &format!("{field}.content"))?;
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = match content {
                    Value::Null => Vec::new(),
                    c => text_blocks(c, &format!("{field}.content"))?,
                };
                for (j, call) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    blocks.push(tool_use(call, &format!("{field}.tool_calls[{j}]"))?);
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = m.get("tool_call_id").cloned().unwrap_or(Value::Null);
                let text = text_of(content, &format!("{field}.content"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": text});
                push_turn(&mut turns, "user", vec![block]);
            }
            _ => return Err(Untranslatable::new(format!("{field}.role"), "unknown role")),
        }
    }
    Ok((system, turns))
}

/// Adds blocks as a turn of `role`, joining a turn of the same role (tool results after
/// one another, a user message after tool results): Anthropic's turns alternate.
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = turns.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some(role) {
            if let Some(Value::Array(content)) = last.get_mut("content") {
                content.extend(blocks);
                return;
            }
        }
    }
    turns.push(json!({"role": role, "content": blocks}));
}

fn text_of(content: &Value, field: &str) -> Result<String> {
    let blocks = text_blocks(content, field)?;
    Ok(blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(""))
}

fn text_blocks(content: &Value, field: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"type": "text", "text": p.get("text")})),
                _ => Err(Untranslatable::new(
                    format!("{field}[{i}].type"),
                    "only text goes here",
                )),
            })
            .collect(),
        _ => Err(Untranslatable::new(
            field,
            "must be a string or a list of parts",
        )),
    }
}

fn user_blocks(content: &Value, field: &str) -> Result<Vec<Value>> {
    let Value::Array(parts) = content else {
        return text_blocks(content, field);
    };
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => out.push(json!({"type": "text", "text": p.get("text")})),
            Some("image_url") => {
                let url = p
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Untranslatable::new(format!("{at}.image_url.url"), "is required")
                    })?;
                out.push(image_block(url, &at)?);
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("{at}.type"),
                    "the target takes text and images only",
                ))
            }
        }
    }
    Ok(out)
}

/// An Anthropic image block from an OpenAI image URL (`data:<type>;base64,<data>` or http(s)).
fn image_block(url: &str, field: &str) -> Result<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media, data) = rest.split_once(";base64,").ok_or_else(|| {
            Untranslatable::new(
                format!("{field}.image_url.url"),
                "a data URL must be base64",
            )
        })?;
        return Ok(json!({"type": "image",
                         "source": {"type": "base64", "media_type": media, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(Untranslatable::new(
        format!("{field}.image_url.url"),
        "must be a data: or http(s) URL",
    ))
}

fn tool_use(call: &Value, field: &str) -> Result<Value> {
    let args = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("{}");
    let input: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args })
        .map_err(|_| Untranslatable::new(format!("{field}.function.arguments"), "is not JSON"))?;
    Ok(json!({"type": "tool_use", "id": call.get("id"),
              "name": call.pointer("/function/name"), "input": input}))
}

/// An Anthropic Messages request as an OpenAI Chat Completions request.
pub fn anthropic_to_openai(req: &Object) -> Result<Object> {
    let mut out = Object::new();
    for (key, v) in req {
        match key.as_str() {
            "model" | "temperature" | "top_p" | "max_tokens" => {
                out.insert(key.clone(), v.clone());
            }
            "stream" => {
                out.insert(key.clone(), v.clone());
                if v.as_bool() == Some(true) {
                    out.insert("stream_options".to_owned(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".to_owned(), v.clone());
            }
            "metadata" => {
                if let Some(user) = v.get("user_id") {
                    out.insert("user".to_owned(), user.clone());
                }
            }
            "tools" => {
                out.insert(key.clone(), anthropic_tools(v)?);
            }
            "output_config" | "output_format" if !v.is_null() => {
                if let Some(format) = structured::anthropic_to_openai(key, v)? {
                    out.insert("response_format".to_owned(), format);
                }
            }
            "system" | "messages" | "tool_choice" => {}
            _ if v.is_null() => {}
            _ => {
                return Err(Untranslatable::new(
                    key,
                    "has no equivalent in the OpenAI Chat Completions API of the target",
                ))
            }
        }
    }
    if let Some(choice) = req.get("tool_choice") {
        let (choice, parallel_off) = anthropic_tool_choice(choice)?;
        out.insert("tool_choice".to_owned(), choice);
        if parallel_off {
            out.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
    }
    let mut messages = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(blocks) => {
            let text = anthropic_text(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be a list"))?;
    for (i, m) in turns.iter().enumerate() {
        anthropic_turn(m, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".to_owned(), Value::Array(messages));
    Ok(out)
}

fn anthropic_tools(v: &Value) -> Result<Value> {
    let list = v
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").is_some_and(|ty| ty != "custom") {
            return Err(Untranslatable::new(
                format!("tools[{i}].type"),
                "server tools do not translate",
            ));
        }
        let mut f = Object::new();
        f.insert(
            "name".to_owned(),
            t.get("name").cloned().unwrap_or(Value::Null),
        );
        if let Some(d) = t.get("description") {
            f.insert("description".to_owned(), d.clone());
        }
        if let Some(s) = t.get("input_schema") {
            f.insert("parameters".to_owned(), s.clone());
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

fn anthropic_tool_choice(v: &Value) -> Result<(Value, bool)> {
    let parallel_off = v.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
    let choice = match v.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": v.get("name")}}),
        _ => return Err(Untranslatable::new("tool_choice.type", "unknown value")),
    };
    Ok((choice, parallel_off))
}

fn anthropic_text(blocks: &Value, field: &str) -> Result<String> {
    let list = blocks
        .as_array()
        .ok_or_else(|| Untranslatable::new(field, "must be a string or a list of blocks"))?;
    let mut text = String::new();
    for (i, b) in list.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            _ => {
                return Err(Untranslatable::new(
                    format!("{field}[{i}].type"),
                    "only text goes here",
                ))
            }
        }
    }
    Ok(text)
}

/// One Anthropic turn as OpenAI messages: its tool results first (one `tool` message each),
/// then the rest.
fn anthropic_turn(m: &Value, field: &str, out: &mut Vec<Value>) -> Result<()> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    if !matches!(role, "user" | "assistant") {
        return Err(Untranslatable::new(format!("{field}.role"), "unknown role"));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(Untranslatable::new(
                format!("{field}.content"),
                "is required",
            ))
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("{field}.content[{i}]");
        match (role, b.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => parts.push(json!({"type": "text", "text": b.get("text")})),
            ("user", Some("image")) => parts.push(image_part(b, &at)?),
            ("user", Some("tool_result")) => {
                let text = match b.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(c @ Value::Array(_)) => anthropic_text(c, &format!("{at}.content"))?,
                    _ => String::new(),
                };
                out.push(
                    json!({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": text}),
                );
            }
            ("assistant", Some("tool_use")) => calls.push(super::response::tool_call(b)),
            _ => {
                return Err(Untranslatable::new(
                    format!("{at}.type"),
                    "has no equivalent in the OpenAI Chat Completions API",
                ))
            }
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut msg = Object::new();
    msg.insert("role".to_owned(), json!(role));
    let all_text = parts.iter().all(|p| p.get("type") == Some(&json!("text")));
    let content = if role == "assistant" || all_text {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        }
    } else {
        Value::Array(parts)
    };
    msg.insert("content".to_owned(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

fn image_part(b: &Value, field: &str) -> Result<Value> {
    let source = b.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or(""),
            source.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => {
            return Err(Untranslatable::new(
                format!("{field}.source.type"),
                "only base64 and URL images translate",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}
