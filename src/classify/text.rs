//! Prompt extraction: borrowed text slices of the request body, by endpoint,
//! with their role, and the counts the token estimate needs. Nothing is
//! copied; anything of an unexpected shape is skipped.

use serde_json::{Map, Value};

use crate::endpoint::Endpoint;

/// Who wrote a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `system` / `developer` messages, Responses `instructions`, Anthropic `system`.
    System,
    User,
    Assistant,
    /// Tool results and tool-call arguments: counted as prompt tokens, never
    /// scanned for the task nor matched by tags.
    Tool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub role: Role,
    /// Index of the message (or prompt string) this text belongs to.
    pub msg: u32,
    pub text: &'a str,
}

/// Everything the classifier needs from the prompt.
#[derive(Debug, Default)]
pub(crate) struct Extracted<'a> {
    pub segments: Vec<Segment<'a>>,
    /// Chat-style messages (the separate system prompt / instructions count as one).
    pub messages: u32,
    /// User and assistant messages.
    pub turns: u32,
    /// The last message holding user-written text.
    pub last_user: Option<u32>,
    /// Index in `segments` of that message's first user segment.
    last_user_start: usize,
    pub images: u32,
    /// Characters (not bytes) of all text segments.
    pub text_chars: u64,
    /// JSON bytes of structured tool-call inputs (Anthropic `tool_use.input`).
    pub json_bytes: u64,
    /// Token ids given directly (completions `prompt` / embeddings `input`).
    pub raw_tokens: u64,
    next_msg: u32,
}

/// Nesting allowed for content inside `tool_result` blocks.
const MAX_DEPTH: u8 = 4;

struct CountBytes(u64);

impl std::io::Write for CountBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compact JSON size of a value, without building the string.
pub(crate) fn json_len(v: Option<&Value>) -> u64 {
    let Some(v) = v else { return 0 };
    let mut counter = CountBytes(0);
    match serde_json::to_writer(&mut counter, v) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

fn role_of(s: Option<&str>) -> Role {
    match s {
        Some("system" | "developer") => Role::System,
        Some("assistant" | "model") => Role::Assistant,
        Some("tool" | "function" | "ipython") => Role::Tool,
        _ => Role::User,
    }
}

impl<'a> Extracted<'a> {
    /// The text segments of the last user message.
    pub(crate) fn last_user_texts(&self) -> impl Iterator<Item = &'a str> + '_ {
        let last = self.last_user;
        self.segments
            .get(self.last_user_start..)
            .unwrap_or(&[])
            .iter()
            .filter(move |s| s.role == Role::User && Some(s.msg) == last)
            .map(|s| s.text)
    }

    /// The text segments of the given roles.
    pub(crate) fn texts_of(&self, roles: &'static [Role]) -> impl Iterator<Item = &'a str> + '_ {
        self.segments
            .iter()
            .filter(move |s| roles.contains(&s.role))
            .map(|s| s.text)
    }

    fn new_msg(&mut self, role: Role, chat: bool) -> u32 {
        let msg = self.next_msg;
        self.next_msg = self.next_msg.saturating_add(1);
        if chat {
            self.messages = self.messages.saturating_add(1);
            if matches!(role, Role::User | Role::Assistant) {
                self.turns = self.turns.saturating_add(1);
            }
        }
        msg
    }

    fn push(&mut self, role: Role, msg: u32, text: &'a str) {
        if text.is_empty() {
            return;
        }
        self.text_chars += text.chars().count() as u64;
        if role == Role::User && self.last_user != Some(msg) {
            self.last_user = Some(msg);
            self.last_user_start = self.segments.len();
        }
        self.segments.push(Segment { role, msg, text });
    }

    /// A chat-style message object: `{role, content, tool_calls?}`.
    fn message(&mut self, m: &'a Value, default_role: Role) {
        let Some(m) = m.as_object() else { return };
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r) => role_of(Some(r)),
            None => default_role,
        };
        let msg = self.new_msg(role, true);
        self.content(m.get("content"), role, msg, 0);
        // OpenAI assistant tool calls (and the legacy function_call).
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                if let Some(f) = call.get("function").and_then(Value::as_object) {
                    self.call(f, msg);
                }
            }
        }
        if let Some(f) = m.get("function_call").and_then(Value::as_object) {
            self.call(f, msg);
        }
    }

    fn call(&mut self, f: &'a Map<String, Value>, msg: u32) {
        for key in ["name", "arguments"] {
            if let Some(s) = f.get(key).and_then(Value::as_str) {
                self.push(Role::Tool, msg, s);
            }
        }
    }

    /// Message content: a string, or an array of parts / blocks.
    fn content(&mut self, c: Option<&'a Value>, role: Role, msg: u32, depth: u8) {
        match c {
            Some(Value::String(s)) => self.push(role, msg, s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    self.part(p, role, msg, depth);
                }
            }
            Some(p @ Value::Object(_)) => self.part(p, role, msg, depth),
            _ => {}
        }
    }

    /// One content part, in any of the OpenAI chat, Responses or Anthropic shapes.
    fn part(&mut self, p: &'a Value, role: Role, msg: u32, depth: u8) {
        let o = match p {
            Value::String(s) => return self.push(role, msg, s),
            Value::Object(o) => o,
            _ => return,
        };
        let str_of = |k: &str| o.get(k).and_then(Value::as_str);
        match o.get("type").and_then(Value::as_str) {
            Some("text" | "input_text" | "output_text") | None => {
                if let Some(t) = str_of("text") {
                    self.push(role, msg, t);
                }
            }
            Some("refusal") => {
                if let Some(t) = str_of("refusal") {
                    self.push(role, msg, t);
                }
            }
            Some("image_url" | "input_image" | "image") => {
                self.images = self.images.saturating_add(1);
            }
            Some("tool_use" | "server_tool_use") => {
                if let Some(name) = str_of("name") {
                    self.push(Role::Tool, msg, name);
                }
                self.json_bytes += json_len(o.get("input"));
            }
            Some("tool_result") if depth < MAX_DEPTH => {
                self.content(o.get("content"), Role::Tool, msg, depth + 1);
            }
            Some("document") => {
                // Anthropic plain-text documents.
                if let Some(src) = o.get("source").and_then(Value::as_object) {
                    if src.get("type").and_then(Value::as_str) == Some("text") {
                        if let Some(d) = src.get("data").and_then(Value::as_str) {
                            self.push(role, msg, d);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Completions `prompt` / embeddings `input`: a string, strings, or token ids.
    fn prompts(&mut self, v: Option<&'a Value>) {
        match v {
            Some(Value::String(s)) => {
                let msg = self.new_msg(Role::User, false);
                self.push(Role::User, msg, s);
            }
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => {
                            let msg = self.new_msg(Role::User, false);
                            self.push(Role::User, msg, s);
                        }
                        Value::Number(_) => self.raw_tokens += 1,
                        Value::Array(ids) => self.raw_tokens += ids.len() as u64,
                        Value::Object(_) => {
                            let msg = self.new_msg(Role::User, false);
                            self.part(item, Role::User, msg, 0);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A Responses API `input` item.
    fn response_item(&mut self, item: &'a Value) {
        let Some(o) = item.as_object() else {
            if let Value::String(s) = item {
                let msg = self.new_msg(Role::User, true);
                self.push(Role::User, msg, s);
            }
            return;
        };
        let ty = o.get("type").and_then(Value::as_str);
        if o.contains_key("role") || ty == Some("message") {
            return self.message(item, Role::User);
        }
        match ty {
            Some("function_call" | "custom_tool_call") => {
                let msg = self.new_msg(Role::Tool, true);
                for key in ["name", "arguments", "input"] {
                    if let Some(s) = o.get(key).and_then(Value::as_str) {
                        self.push(Role::Tool, msg, s);
                    }
                }
            }
            Some("function_call_output" | "custom_tool_call_output") => {
                let msg = self.new_msg(Role::Tool, true);
                self.content(o.get("output"), Role::Tool, msg, 1);
            }
            Some("input_text" | "input_image" | "text" | "image_url" | "image") => {
                let msg = self.new_msg(Role::User, true);
                self.part(item, Role::User, msg, 0);
            }
            _ => {}
        }
    }
}

/// Extracts the prompt of `body` as sent to `endpoint`.
/// Words that open a line of code in the common languages.
const CODE_OPENERS: &[&str] = &[
    "def ",
    "async def ",
    "class ",
    "import ",
    "from ",
    "#include",
    "fn ",
    "pub fn ",
    "func ",
    "function ",
    "package ",
    "using ",
    "public ",
    "const ",
    "let ",
    "var ",
    "#!/",
    "<?php",
];

/// Whether the last user turn opens with a line of code (a definition, an import, an
/// include): such a request is code work whatever its comments say (HumanEval's problems are
/// a signature and a docstring). A rule, not a weight: the labelled sets have few such turns.
pub(crate) fn opens_with_code(ex: &Extracted<'_>) -> bool {
    let Some(text) = ex.last_user_texts().next() else {
        return false;
    };
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let Some(opener) = CODE_OPENERS.iter().find(|o| line.starts_with(**o)) else {
        return false;
    };
    let rest = line.get(opener.len()..).unwrap_or("").trim_start();
    match *opener {
        // `from x import y`, `import x` / `import x.y as z`: not prose ("from now on", "import
        // duties are ...").
        "from " => line.contains(" import "),
        "import " => line.split_whitespace().count() <= 4 && !line.ends_with('.'),
        "package " => line.split_whitespace().count() == 2,
        "#include" | "#!/" | "<?php" => true,
        "public " => line.contains(['(', '{']),
        // A definition: a name, then what follows a name in code (`def f(`, `class A:`,
        // `const x =`, `fn main() {`, `class A<T> {`).
        _ => {
            let name_end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            let after = rest.get(name_end..).unwrap_or("").trim_start();
            name_end > 0
                && (after.starts_with(['(', '{', '<', '=', ';'])
                    || (after.starts_with(':') && line.ends_with(':')))
        }
    }
}

pub(crate) fn extract(body: &Value, endpoint: Endpoint) -> Extracted<'_> {
    let mut ex = Extracted::default();
    let Some(obj) = body.as_object() else {
        return ex;
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            if let Some(msgs) = obj.get("messages").and_then(Value::as_array) {
                for m in msgs {
                    ex.message(m, Role::User);
                }
            }
        }
        Endpoint::Completions => ex.prompts(obj.get("prompt")),
        Endpoint::Embeddings => ex.prompts(obj.get("input")),
        Endpoint::Responses => {
            if let Some(s) = obj.get("instructions").and_then(Value::as_str) {
                let msg = ex.new_msg(Role::System, true);
                ex.push(Role::System, msg, s);
            }
            match obj.get("input") {
                Some(Value::String(s)) => {
                    let msg = ex.new_msg(Role::User, true);
                    ex.push(Role::User, msg, s);
                }
                Some(Value::Array(items)) => {
                    for item in items {
                        ex.response_item(item);
                    }
                }
                _ => {}
            }
        }
        Endpoint::AnthropicMessages => {
            if let Some(system @ (Value::String(_) | Value::Array(_))) = obj.get("system") {
                let msg = ex.new_msg(Role::System, true);
                ex.content(Some(system), Role::System, msg, 0);
            }
            if let Some(msgs) = obj.get("messages").and_then(Value::as_array) {
                for m in msgs {
                    ex.message(m, Role::User);
                }
            }
        }
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_that_opens_with_code_is_coding() {
        let opens = |prompt: &str| {
            let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
            opens_with_code(&extract(&body, Endpoint::ChatCompletions))
        };
        for code in [
            "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\" sum \"\"\"\n",
            "\n\ndef is_prime(n):\n",
            "import math\n\ndef area(r):",
            "#include <stdio.h>\nint main() {}",
            "fn main() {\n}",
        ] {
            assert!(opens(code), "{code}");
        }
        for prose in [
            "from now on, answer in French",
            "import duties on steel rose by 5% last year; why?",
            "class discussion: what caused the French revolution?",
            "Define a function that sums a list",
            "",
        ] {
            assert!(!opens(prose), "{prose}");
        }
    }
}
