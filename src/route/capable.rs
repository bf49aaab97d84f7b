//! Which candidates can serve a request, by their declared `capabilities`: images need
//! `vision`, tools `tools`, `response_format` `json_object` / `json_schema` need
//! `json_output` / `structured_outputs`, `stream: true` needs `streaming`, and the prompt
//! estimate plus the requested output cap must fit `context_window` (the cap alone
//! `max_output_tokens`). An undeclared capability is unknown and never skips, unless the
//! client sent `provider.require_parameters: true`: then every capability the request uses
//! must be declared `true`. Works on the classification and the parsed body only (no host
//! call); candidates are checked before the strategy chooses.

use std::fmt;

use serde_json::{Map, Value};

use crate::classify::Classification;
use crate::config::capabilities::{Capabilities, Capability};
use crate::errors::echoed;

/// The output format a request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// `{"type": "json_object"}`.
    JsonObject,
    /// `{"type": "json_schema", ...}`.
    JsonSchema,
}

impl OutputFormat {
    /// From the body: `response_format.type` (chat, completions), `text.format.type`
    /// (Responses API) or `output_config.format.type` (Anthropic; the beta's `output_format`).
    pub fn of(body: &Map<String, Value>) -> OutputFormat {
        let kind = [
            body.get("response_format"),
            body.get("text").and_then(|t| t.get("format")),
            body.get("output_format"),
            body.get("output_config").and_then(|c| c.get("format")),
        ]
        .into_iter()
        .flatten()
        .find_map(|f| f.get("type").and_then(Value::as_str));
        match kind {
            Some("json_object") => OutputFormat::JsonObject,
            Some("json_schema") => OutputFormat::JsonSchema,
            _ => OutputFormat::Text,
        }
    }
}

/// What a request needs of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The classifier's estimate.
    pub prompt_tokens: u64,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`, when given.
    pub output_tokens: Option<u64>,
    pub images: bool,
    pub tools: bool,
    pub stream: bool,
    pub format: OutputFormat,
}

impl Needs {
    pub fn of(c: &Classification, output_tokens: Option<u64>, format: OutputFormat) -> Needs {
        Needs {
            prompt_tokens: c.estimated_prompt_tokens,
            output_tokens,
            images: c.has_images,
            tools: c.has_tools,
            stream: c.stream,
            format,
        }
    }

    /// Whether the request uses the boolean capability `c`.
    fn uses(&self, c: Capability) -> bool {
        match c {
            Capability::Vision => self.images,
            Capability::Tools => self.tools,
            Capability::JsonOutput => self.format == OutputFormat::JsonObject,
            Capability::StructuredOutputs => self.format == OutputFormat::JsonSchema,
            Capability::Streaming => self.stream,
            Capability::ContextWindow | Capability::MaxOutputTokens => false,
        }
    }

    /// Prompt plus requested output: what must fit the context window.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_add(self.output_tokens.unwrap_or(0))
    }
}

/// Why a target cannot serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Prompt estimate plus output cap (`needed`) over the declared window.
    ContextWindow { window: u64, needed: u64 },
    /// The requested output cap over the declared maximum.
    MaxOutputTokens { max: u64, requested: u64 },
    /// Declared `false`.
    Lacks(Capability),
    /// Not declared, and the client requires declared support.
    Undeclared(Capability),
}

impl Unfit {
    /// The capability that is missing (the `reason` of the skip stat).
    pub fn capability(self) -> Capability {
        match self {
            Unfit::ContextWindow { .. } => Capability::ContextWindow,
            Unfit::MaxOutputTokens { .. } => Capability::MaxOutputTokens,
            Unfit::Lacks(c) | Unfit::Undeclared(c) => c,
        }
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::ContextWindow { window, needed } => {
                write!(f, "context window {window} < {needed} tokens")
            }
            Unfit::MaxOutputTokens { max, requested } => {
                write!(f, "max output tokens {max} < {requested} requested")
            }
            Unfit::Lacks(c) => write!(f, "no {}", c.name()),
            Unfit::Undeclared(c) => {
                write!(f, "{} not declared (provider.require_parameters)", c.name())
            }
        }
    }
}

/// Why a target with `caps` cannot serve a request that `needs` this, if it cannot. With
/// `require_parameters`, a capability the request uses must be declared `true`; otherwise
/// only a declared `false` (or a too small token limit) rules the target out.
pub fn unfit(caps: &Capabilities, needs: &Needs, require_parameters: bool) -> Option<Unfit> {
    if let Some(window) = caps.context_window {
        let needed = needs.total_tokens();
        if needed > window {
            return Some(Unfit::ContextWindow { window, needed });
        }
    }
    if let (Some(max), Some(requested)) = (caps.max_output_tokens, needs.output_tokens) {
        if requested > max {
            return Some(Unfit::MaxOutputTokens { max, requested });
        }
    }
    Capability::ALL
        .into_iter()
        .filter(|c| needs.uses(*c))
        .find_map(|c| match caps.flag(c) {
            Some(false) => Some(Unfit::Lacks(c)),
            None if require_parameters => Some(Unfit::Undeclared(c)),
            _ => None,
        })
}

/// Longest list of skipped candidates a 503 names, in bytes; the others are counted.
pub const MAX_REASON_BYTES: usize = 1024;

/// The candidates a request skipped and why, for the 503 when none is left (bounded).
#[derive(Debug, Default)]
pub struct Skipped {
    named: Vec<String>,
    bytes: usize,
    more: usize,
}

impl Skipped {
    pub fn push(&mut self, upstream: &str, model: &str, why: Unfit) {
        let entry = format!("{upstream}/{}: {why}", echoed(model));
        if self.bytes + entry.len() > MAX_REASON_BYTES && !self.named.is_empty() {
            self.more += 1;
            return;
        }
        self.bytes += entry.len() + 2;
        self.named.push(entry);
    }

    /// The reasons, in order, then how many more were skipped.
    pub fn into_reasons(self) -> impl Iterator<Item = String> {
        let more = (self.more > 0).then(|| format!("and {} more", self.more));
        self.named.into_iter().chain(more)
    }
}

#[cfg(test)]
#[path = "capable_tests.rs"]
mod tests;
