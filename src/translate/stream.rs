//! Streams, both ways, event by event: each upstream chunk is split into whole SSE events
//! (an event may arrive in pieces: the rest waits for the next chunk), and each event is
//! translated as soon as it is whole, so a translated stream is as prompt as the upstream's.
//!
//! | Anthropic event | OpenAI `chat.completion.chunk` |
//! |---|---|
//! | `message_start` | the first chunk: `delta.role` `assistant` |
//! | `content_block_start` `tool_use` | `delta.tool_calls[i]` with `id`, `function.name` |
//! | `content_block_delta` `text_delta` | `delta.content` |
//! | `content_block_delta` `input_json_delta` | `delta.tool_calls[i].function.arguments` |
//! | `message_delta` (`stop_reason`, `usage`) | `finish_reason`; the usage chunk (`choices: []`) |
//! | `message_stop` | `data: [DONE]` |
//! | `ping`, `content_block_start` `text`, `content_block_stop` | nothing |
//! | `error` | `{"error": ...}` |

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use super::response::{finish_reason, openai_usage, stop_reason};

/// The longest event held while it is incomplete; a longer one ends the translation.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits a byte stream into SSE events (`event:` name and joined `data:` lines).
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
    /// How far `buf` was scanned, and where its current line starts: each byte is looked
    /// at once, however the event is split (a hostile upstream's 1-byte chunks stay linear).
    scanned: usize,
    line_start: usize,
}

/// An event outgrew [`MAX_EVENT_BYTES`] before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Events {
    /// The events that `chunk` completes; `Err` when an event outgrows [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // Events are taken from `start` on, and the buffer drained once at the end: a
        // drain per event would move the rest of a burst once for each of its events.
        let mut start = 0;
        while let Some((end, next)) = self.event_end() {
            if let Some(e) = self.buf.get(start..end).and_then(parse_event) {
                out.push(e);
            }
            (start, self.scanned, self.line_start) = (next, next, next);
        }
        self.buf.drain(..start);
        self.scanned -= start;
        self.line_start -= start;
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(out)
    }
}

impl Events {
    /// Where the event at `line_start` ends (its last byte before the blank line) and
    /// where the next begins. A `\r` at the very end may be half of `\r\n`: wait for the
    /// next byte.
    fn event_end(&mut self) -> Option<(usize, usize)> {
        let buf = &self.buf;
        let mut i = self.scanned;
        loop {
            // Line ends are found a word at a time (memchr), not byte by byte.
            let Some(at) = buf
                .get(i..)
                .and_then(|rest| memchr::memchr2(b'\n', b'\r', rest))
            else {
                self.scanned = buf.len();
                return None;
            };
            let eol = i + at;
            let after = match (buf.get(eol), buf.get(eol + 1)) {
                (Some(b'\r'), Some(b'\n')) => eol + 2,
                (Some(b'\r'), None) => {
                    self.scanned = eol;
                    return None;
                }
                _ => eol + 1,
            };
            if eol == self.line_start {
                return Some((self.line_start, after));
            }
            self.line_start = after;
            i = after;
        }
    }
}

fn parse_event(raw: &[u8]) -> Option<Event> {
    let mut name = None;
    let mut data: Option<String> = None;
    for line in raw
        .split(|b| matches!(b, b'\n' | b'\r'))
        .filter(|l| !l.is_empty())
    {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"event" => name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                let value = String::from_utf8_lossy(value);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => data = Some(value.into_owned()),
                }
            }
            _ => {}
        }
    }
    if name.is_none() && data.is_none() {
        return None;
    }
    Some(Event {
        name,
        data: data.unwrap_or_default(),
    })
}

fn sse_data(v: &Value) -> Vec<u8> {
    format!("data: {v}\n\n").into_bytes()
}

fn sse_event(name: &str, v: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {v}\n\n").into_bytes()
}

/// An Anthropic Messages stream as OpenAI chat completion chunks.
#[derive(Debug, Default)]
pub struct AnthropicToOpenAi {
    events: Events,
    id: Value,
    model: Value,
    created: u64,
    /// Send the usage chunk (the client asked for `stream_options.include_usage`).
    include_usage: bool,
    /// The usage so far (message_start's, then message_delta's counts over it).
    usage: Value,
    /// The OpenAI tool-call index of each Anthropic content block that is a tool use.
    tool_blocks: Vec<(u64, usize)>,
    broken: bool,
    /// A text chunk up to its text (`data: {"id":...,"delta":{"content":`), once rendered.
    text_head: Option<Vec<u8>>,
}

/// The hot event of an Anthropic stream, read without building a JSON tree: a text delta.
#[derive(Deserialize)]
struct AnthropicText<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    delta: Option<TextDelta<'a>>,
}

#[derive(Deserialize)]
struct TextDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// The hot chunk of an OpenAI stream: text in the first choice, nothing else to map.
#[derive(Deserialize)]
struct OpenAiText<'a> {
    error: Option<IgnoredAny>,
    usage: Option<IgnoredAny>,
    #[serde(borrow, default)]
    choices: Vec<ChoiceText<'a>>,
}

#[derive(Deserialize)]
struct ChoiceText<'a> {
    #[serde(borrow)]
    delta: Option<DeltaText<'a>>,
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct DeltaText<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    tool_calls: Option<IgnoredAny>,
}

/// `text` as a JSON string, appended to `out`.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

impl AnthropicToOpenAi {
    pub fn new(created: u64, include_usage: bool) -> AnthropicToOpenAi {
        AnthropicToOpenAi {
            created,
            include_usage,
            ..AnthropicToOpenAi::default()
        }
    }

    /// The translation of `chunk`: the chunks of the events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.broken {
            return Vec::new();
        }
        let Ok(events) = self.events.push(chunk) else {
            self.broken = true;
            return sse_data(
                &json!({"error": {"message": "an upstream event is too large",
                                              "type": "server_error"}}),
            );
        };
        let mut out = Vec::new();
        for e in events {
            if let Ok(t) = serde_json::from_str::<AnthropicText>(&e.data) {
                if let ("content_block_delta", Some(d)) = (t.kind.as_ref(), &t.delta) {
                    if let ("text_delta", Some(text)) = (d.kind.as_ref(), &d.text) {
                        self.text_chunk(text, &mut out);
                        continue;
                    }
                }
            }
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                continue;
            };
            out.extend(self.event(&v));
        }
        out
    }

    /// The chunk of a text delta, from its head rendered once per message.
    fn text_chunk(&mut self, text: &str, out: &mut Vec<u8>) {
        let head = self.text_head.get_or_insert_with(|| {
            let mut h = b"data: {\"id\":".to_vec();
            let _ = serde_json::to_writer(&mut h, &self.id);
            h.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            h.extend_from_slice(self.created.to_string().as_bytes());
            h.extend_from_slice(b",\"model\":");
            let _ = serde_json::to_writer(&mut h, &self.model);
            h.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{\"content\":");
            h
        });
        out.extend_from_slice(head);
        push_json_str(out, text);
        out.extend_from_slice(b"},\"finish_reason\":null}]}\n\n");
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn event(&mut self, v: &Value) -> Vec<u8> {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").cloned().unwrap_or(Value::Null);
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                self.text_head = None;
                self.usage = m.get("usage").cloned().unwrap_or(Value::Null);
                sse_data(&self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Vec::new();
                }
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call = self.tool_blocks.len();
                self.tool_blocks.push((index, call));
                let delta = json!({"tool_calls": [{"index": call, "id": block.get("id"), "type": "function",
                                                   "function": {"name": block.get("name"), "arguments": ""}}]});
                sse_data(&self.chunk(delta, Value::Null))
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => match d.get("text").and_then(Value::as_str) {
                        Some(text) => {
                            let mut out = Vec::new();
                            self.text_chunk(text, &mut out);
                            out
                        }
                        None => {
                            sse_data(&self.chunk(json!({"content": d.get("text")}), Value::Null))
                        }
                    },
                    Some("input_json_delta") => {
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some((_, call)) = self.tool_blocks.iter().find(|(b, _)| *b == index)
                        else {
                            return Vec::new();
                        };
                        let delta = json!({"tool_calls": [{"index": call,
                                           "function": {"arguments": d.get("partial_json")}}]});
                        sse_data(&self.chunk(delta, Value::Null))
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let stop = v.pointer("/delta/stop_reason").and_then(Value::as_str);
                let mut out = sse_data(&self.chunk(json!({}), finish_reason(stop)));
                if self.include_usage {
                    // message_delta's counts are cumulative and may include the prompt's
                    // (input and cache counts): they override message_start's.
                    if let (Some(start), Some(delta)) = (
                        self.usage.as_object_mut(),
                        v.get("usage").and_then(Value::as_object),
                    ) {
                        for (k, n) in delta.iter().filter(|(_, n)| n.is_u64()) {
                            start.insert(k.clone(), n.clone());
                        }
                    } else if let Some(delta) = v.get("usage").filter(|u| u.is_object()) {
                        self.usage = delta.clone();
                    }
                    out.extend(sse_data(&json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": openai_usage(&self.usage)})));
                }
                out
            }
            "message_stop" => b"data: [DONE]\n\n".to_vec(),
            "error" => sse_data(&json!({"error": {
                "message": v.pointer("/error/message"), "type": v.pointer("/error/type")}})),
            _ => Vec::new(),
        }
    }
}

/// An OpenAI chat completion stream (first choice) as Anthropic Messages events.
#[derive(Debug, Default)]
pub struct OpenAiToAnthropic {
    events: Events,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(usize, bool)>,
    next_block: usize,
    /// The content block of each OpenAI tool-call index.
    tools: Vec<(u64, usize)>,
    stop: Value,
    usage: Value,
    done: bool,
}

impl OpenAiToAnthropic {
    pub fn new() -> OpenAiToAnthropic {
        OpenAiToAnthropic::default()
    }

    /// The translation of `chunk`; `end`: the upstream's stream ended with it (a stream
    /// without `[DONE]` is finished here).
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let events = match self.events.push(chunk) {
            Ok(e) => e,
            Err(EventTooLarge) => {
                self.done = true;
                return sse_event(
                    "error",
                    &json!({"type": "error", "error": {
                    "type": "api_error", "message": "an upstream event is too large"}}),
                );
            }
        };
        for e in events {
            if e.data.trim() == "[DONE]" {
                out.extend(self.finish());
                return out;
            }
            if let Some(text) = self.open_text_block().and_then(|_| plain_text(&e.data)) {
                self.text_delta(&text, &mut out);
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                out.extend(self.chunk(&v));
            }
        }
        if end {
            out.extend(self.finish());
        }
        out
    }

    fn start(&mut self, v: &Value) -> Vec<u8> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": v.get("id"), "type": "message", "role": "assistant", "model": v.get("model"),
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    fn close(&mut self) -> Vec<u8> {
        match self.open.take() {
            Some((index, _)) => sse_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ),
            None => Vec::new(),
        }
    }

    fn open_block(&mut self, block: Value, text: bool) -> Vec<u8> {
        let mut out = self.close();
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, text));
        out.extend(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        out
    }

    fn chunk(&mut self, v: &Value) -> Vec<u8> {
        if let Some(e) = v.get("error") {
            return sse_event(
                "error",
                &json!({"type": "error", "error": {
                "type": "api_error", "message": e.get("message")}}),
            );
        }
        let mut out = self.start(v);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = u.clone();
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if !matches!(self.open, Some((_, true))) {
                out.extend(self.open_block(json!({"type": "text", "text": ""}), true));
            }
            self.text_delta(text, &mut out);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if call.get("id").is_some() || !self.tools.iter().any(|(t, _)| *t == k) {
                let block = json!({"type": "tool_use", "id": call.get("id"),
                                   "name": call.pointer("/function/name"), "input": {}});
                out.extend(self.open_block(block, false));
                let index = self.open.map_or(0, |(i, _)| i);
                self.tools.push((k, index));
            }
            let args = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let (false, Some((_, index))) = (
                args.is_empty(),
                self.tools.iter().rev().find(|(t, _)| *t == k),
            ) {
                out.extend(sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = stop_reason(Some(f));
            out.extend(self.close());
        }
        out
    }

    /// The index of the open content block when the message started and it is text.
    fn open_text_block(&self) -> Option<usize> {
        match (self.started, self.open) {
            (true, Some((index, true))) => Some(index),
            _ => None,
        }
    }

    /// A text delta of the open text block.
    fn text_delta(&self, text: &str, out: &mut Vec<u8>) {
        let index = self.open.map_or(0, |(i, _)| i);
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b",\"delta\":{\"type\":\"text_delta\",\"text\":");
        push_json_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    fn finish(&mut self) -> Vec<u8> {
        self.done = true;
        let mut out = self.start(&Value::Null);
        out.extend(self.close());
        let usage = super::response::anthropic_usage(&self.usage);
        out.extend(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop, "stop_sequence": null}, "usage": usage}),
        ));
        out.extend(sse_event("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

/// The text of an OpenAI chunk that carries only text in its first choice (no error, usage,
/// tool calls or finish reason): the hot chunk, read without building a JSON tree.
fn plain_text(data: &str) -> Option<Cow<'_, str>> {
    let c: OpenAiText = serde_json::from_str(data).ok()?;
    if c.error.is_some() || c.usage.is_some() {
        return None;
    }
    let choice = c.choices.into_iter().next()?;
    let delta = choice.delta?;
    if choice.finish_reason.is_some() || delta.tool_calls.is_some() {
        return None;
    }
    delta.content.filter(|t| !t.is_empty())
}
