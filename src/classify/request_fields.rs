//! What the request's fields (not its prompt text) say to the classifier: streaming, tools,
//! a forced tool choice, structured output, the output budget, the reasoning effort, read
//! from whichever field each API uses.

use serde_json::{Map, Value};

use super::heuristics::{EXTRACTION, REASONING};

/// An explicit reasoning effort, from whichever field the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Effort {
    /// `none` or `minimal`.
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

impl Effort {
    fn parse(s: &str) -> Option<Effort> {
        Some(match s {
            "none" | "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            "xhigh" | "max" => Effort::Xhigh,
            _ => return None,
        })
    }

    /// Anthropic `thinking.budget_tokens`: ≤ 4096 low, ≤ 16384 medium,
    /// ≤ 32768 high, more xhigh.
    fn from_budget(budget: u64) -> Effort {
        match budget {
            0..=4_096 => Effort::Low,
            4_097..=16_384 => Effort::Medium,
            16_385..=32_768 => Effort::High,
            _ => Effort::Xhigh,
        }
    }
}

/// What the request fields (not the prompt text) say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestSignals {
    pub stream: bool,
    pub has_tools: bool,
    /// JSON bytes of `tools` and `functions`.
    pub tool_def_bytes: u64,
    pub tool_choice_forced: bool,
    pub structured_output: bool,
    pub max_output_tokens: u64,
    pub effort: Option<Effort>,
}

fn path<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    rest.iter()
        .try_fold(obj.get(*first)?, |v, k| v.as_object()?.get(*k))
}

fn str_at<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    path(obj, keys).and_then(Value::as_str)
}

impl RequestSignals {
    pub(crate) fn read(body: &Value) -> RequestSignals {
        let Some(obj) = body.as_object() else {
            return RequestSignals::default();
        };
        let mut req = RequestSignals {
            stream: obj.get("stream").and_then(Value::as_bool) == Some(true),
            ..RequestSignals::default()
        };
        for key in ["tools", "functions"] {
            if let Some(list) = obj.get(key).and_then(Value::as_array) {
                if !list.is_empty() {
                    req.has_tools = true;
                    req.tool_def_bytes += super::text::json_len(obj.get(key));
                }
            }
        }
        req.tool_choice_forced = req.has_tools
            && match obj.get("tool_choice").or_else(|| obj.get("function_call")) {
                Some(Value::String(s)) => s == "required" || s == "any",
                Some(Value::Object(o)) => {
                    matches!(
                        o.get("type").and_then(Value::as_str),
                        Some("function" | "tool" | "any" | "custom")
                    ) || o.get("name").is_some_and(Value::is_string)
                }
                _ => false,
            };
        req.structured_output = [
            &["response_format", "type"][..],
            &["text", "format", "type"],
            &["output_format", "type"],
            &["output_config", "format", "type"],
        ]
        .iter()
        .any(|keys| matches!(str_at(obj, keys), Some("json_object" | "json_schema")));
        req.max_output_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_u64))
            .max()
            .unwrap_or(0);
        req.effort = str_at(obj, &["reasoning_effort"])
            .and_then(Effort::parse)
            .or_else(|| str_at(obj, &["reasoning", "effort"]).and_then(Effort::parse))
            .or_else(|| str_at(obj, &["output_config", "effort"]).and_then(Effort::parse))
            .or_else(|| match str_at(obj, &["thinking", "type"]) {
                Some("enabled") => path(obj, &["thinking", "budget_tokens"])
                    .and_then(Value::as_u64)
                    .map(Effort::from_budget),
                Some("disabled") => Some(Effort::Minimal),
                _ => None,
            });
        req
    }

    /// Request-level task points, indexed like [`SCORED`].
    pub(crate) fn task_points(&self) -> [u32; 5] {
        let mut p = [0u32; 5];
        if let Some(x) = p.get_mut(EXTRACTION) {
            if self.structured_output {
                *x += 3;
            }
            if self.tool_choice_forced {
                *x += 3;
            }
        }
        if let Some(r) = p.get_mut(REASONING) {
            *r += match self.effort {
                // Medium is OpenAI's default effort: it hints, it does not decide.
                None | Some(Effort::Minimal | Effort::Low) => 0,
                Some(Effort::Medium) => 1,
                Some(Effort::High | Effort::Xhigh) => 2,
            };
        }
        p
    }
}
