//! Token usage a response reports, read as the response passes (never held back): from a whole
//! JSON body ([`usage_in_json`], [`BodyUsage`]), from server-sent events ([`StreamUsage`]), or
//! leniently from the end of a body ([`usage_of`]). Pure (no host calls), so it tests natively.

use std::fmt;

use memchr::memmem;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

mod json_end;
mod sse;

pub use json_end::{BodyEnd, JsonEnd};
pub use sse::{Edit, StreamUsage};

#[cfg(test)]
mod tests;

/// A non-streaming body up to this size is kept whole for an exact JSON parse (VM memory
/// grows with the largest bodies of concurrent requests and never shrinks: larger bodies,
/// e.g. embeddings, are scanned at their ends, where providers put `usage`).
pub const MAX_JSON_BODY_BYTES: usize = 64 << 10;
/// A server-sent event up to this size is kept whole until it ends.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// How much of each end of a larger body (or event) is kept for a lenient scan.
pub const END_BYTES: usize = 4096;

/// Token counts a response reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt (input) tokens: OpenAI `prompt_tokens` / Responses `input_tokens`;
    /// Anthropic `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
    pub prompt: u64,
    /// Completion (output) tokens, reasoning included: `completion_tokens` / `output_tokens`.
    pub completion: u64,
    /// `total_tokens` when given, else prompt + completion.
    pub total: u64,
    /// Prompt tokens served from the provider's cache: OpenAI
    /// `prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`,
    /// Anthropic `cache_read_input_tokens`.
    pub cached: Option<u64>,
    /// OpenAI `completion_tokens_details.reasoning_tokens`, Responses
    /// `output_tokens_details.reasoning_tokens`.
    pub reasoning: Option<u64>,
}

/// The fields of one `usage` object as reported, kept apart until they are combined into a
/// [`Usage`]: an Anthropic stream reports them in two events, the second overriding some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "RawUsage")]
struct Counts {
    /// `prompt_tokens` or `input_tokens` (Anthropic: without the cache tokens).
    input: Option<u64>,
    /// `completion_tokens` or `output_tokens`.
    output: Option<u64>,
    total: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    /// `cached_tokens` of the OpenAI details.
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl Counts {
    /// These counts with every field `newer` reports replaced by its value.
    fn overridden_by(self, newer: Counts) -> Counts {
        Counts {
            input: newer.input.or(self.input),
            output: newer.output.or(self.output),
            total: newer.total.or(self.total),
            cache_creation: newer.cache_creation.or(self.cache_creation),
            cache_read: newer.cache_read.or(self.cache_read),
            cached: newer.cached.or(self.cached),
            reasoning: newer.reasoning.or(self.reasoning),
        }
    }

    /// `None` when no token count was reported at all (e.g. `"usage": {}`).
    fn usage(self) -> Option<Usage> {
        if self.input.is_none()
            && self.output.is_none()
            && self.total.is_none()
            && self.cache_creation.is_none()
            && self.cache_read.is_none()
        {
            return None;
        }
        // Only Anthropic reports the cache fields, and its `input_tokens` excludes them.
        let prompt = self
            .input
            .unwrap_or(0)
            .saturating_add(self.cache_creation.unwrap_or(0))
            .saturating_add(self.cache_read.unwrap_or(0));
        let completion = self.output.unwrap_or(0);
        Some(Usage {
            prompt,
            completion,
            total: self.total.unwrap_or(prompt.saturating_add(completion)),
            cached: self.cached.or(self.cache_read),
            reasoning: self.reasoning,
        })
    }
}

/// A `usage` object of any of the formats, as serde reads it.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    total_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

/// `*_tokens_details` of OpenAI chat and Responses usage.
#[derive(Deserialize, Default)]
struct Details {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: Option<u64>,
}

impl From<RawUsage> for Counts {
    fn from(raw: RawUsage) -> Counts {
        let detail =
            |d: &Option<Details>, pick: fn(&Details) -> Option<u64>| d.as_ref().and_then(pick);
        Counts {
            input: raw.prompt_tokens.or(raw.input_tokens),
            output: raw.completion_tokens.or(raw.output_tokens),
            total: raw.total_tokens,
            cache_creation: raw.cache_creation_input_tokens,
            cache_read: raw.cache_read_input_tokens,
            cached: detail(&raw.prompt_tokens_details, |d| d.cached_tokens)
                .or(detail(&raw.input_tokens_details, |d| d.cached_tokens)),
            reasoning: detail(&raw.completion_tokens_details, |d| d.reasoning_tokens)
                .or(detail(&raw.output_tokens_details, |d| d.reasoning_tokens)),
        }
    }
}

/// A token count: a non-negative integer (also a whole float or a numeric string, as some
/// OpenAI-compatible servers send); anything else is no count rather than a failed parse.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_any(CountVisitor)
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        let whole = v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64;
        Ok(whole.then_some(v as u64))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.trim().parse().ok())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// A whole non-streaming response: only its top-level `usage` counts.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    usage: Option<Counts>,
}

/// The JSON of one streamed event, as far as usage goes.
#[derive(Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: Option<Kind>,
    /// OpenAI chat/completions chunks, Anthropic `message_delta`.
    #[serde(default)]
    usage: Option<Counts>,
    /// Empty in OpenAI's usage-only chunk (a `Vec` of zero-sized items does not allocate).
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    /// Responses API `response.completed` (and `incomplete`, `failed`).
    #[serde(default)]
    response: Option<UsageHolder>,
    /// Anthropic `message_start`.
    #[serde(default)]
    message: Option<UsageHolder>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// Anthropic's: its usage adds to (overrides fields of) that of `message_start`.
    MessageDelta,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct UsageHolder {
    #[serde(default)]
    usage: Option<Counts>,
}

/// The usage one streamed event reports.
#[derive(Debug, Clone, Copy)]
struct EventUsage {
    counts: Counts,
    /// Override only the fields reported (Anthropic `message_delta`); else replace all.
    merge: bool,
    /// OpenAI's usage-only chunk (`"choices": []`).
    usage_only: bool,
}

/// The usage in the JSON data of one event, if it has any.
fn event_usage(json: &[u8]) -> Option<EventUsage> {
    let event: Event = serde_json::from_slice(json).ok()?;
    if let Some(counts) = event.usage {
        return Some(EventUsage {
            counts,
            merge: matches!(event.kind, Some(Kind::MessageDelta)),
            usage_only: event.choices.is_some_and(|c| c.is_empty()),
        });
    }
    let counts = event
        .response
        .and_then(|r| r.usage)
        .or_else(|| event.message.and_then(|m| m.usage))?;
    Some(EventUsage {
        counts,
        merge: false,
        usage_only: false,
    })
}

/// Usage of a whole non-streaming JSON response body (OpenAI chat.completion, text_completion,
/// Responses API `response` object, embeddings list, Anthropic `message`): its top-level
/// `usage` object. `None` when the body is not JSON or has no usage with numbers.
pub fn usage_in_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<Body>(body).ok()?.usage?.usage()
}

/// Lenient scan of bytes that may start mid-document (the end of a large body or event): the
/// last `"usage"` key followed by a complete object with token counts. Not a JSON parse of
/// the whole: only that object is parsed.
pub fn usage_of(tail: &[u8]) -> Option<Usage> {
    lenient_counts(tail).and_then(Counts::usage)
}

const USAGE_KEY: &[u8] = b"\"usage\"";

/// See [`usage_of`]; an object without counts (or cut off) gives way to an earlier one.
fn lenient_counts(bytes: &[u8]) -> Option<Counts> {
    let mut end = bytes.len();
    while let Some(at) = memmem::rfind(bytes.get(..end)?, USAGE_KEY) {
        let found = object_after_key(bytes, at + USAGE_KEY.len())
            .and_then(|object| serde_json::from_slice::<Counts>(object).ok())
            .filter(|c| c.usage().is_some());
        if found.is_some() {
            return found;
        }
        end = at;
    }
    None
}

/// Whether `json` has a `"usage"` key whose value is an object: a cheap test that spares a
/// parse of the many streamed chunks with `"usage": null` or none.
fn has_usage_object(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = json
        .get(from..)
        .and_then(|rest| memmem::find(rest, USAGE_KEY))
    {
        let after = from + at + USAGE_KEY.len();
        if value_after_key(json, after).is_some_and(|v| json.get(v) == Some(&b'{')) {
            return true;
        }
        from = after;
    }
    false
}

/// Where the value of a key ending at `from` starts: past whitespace, `:` and whitespace.
fn value_after_key(bytes: &[u8], from: usize) -> Option<usize> {
    let skip_space = |i: usize| {
        bytes
            .get(i..)
            .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
            .map(|n| i + n)
    };
    let colon = skip_space(from)?;
    if bytes.get(colon) != Some(&b':') {
        return None;
    }
    skip_space(colon + 1)
}

/// The object (`{` to its matching `}`) that is the value of the key ending at `from`.
fn object_after_key(bytes: &[u8], from: usize) -> Option<&[u8]> {
    let start = value_after_key(bytes, from)?;
    let object = bytes.get(start..)?;
    if object.first() != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in object.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return object.get(..=i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Makes room in `buf` for `extra` more bytes, doubling as usual but not past `cap`, so a
/// buffer bounded by `cap` does not reserve twice that.
fn reserve_capped(buf: &mut Vec<u8>, extra: usize, cap: usize) {
    let need = buf.len().saturating_add(extra);
    if need <= buf.capacity() {
        return;
    }
    let want = need.max(buf.capacity().saturating_mul(2).min(cap));
    buf.reserve_exact(want - buf.len());
}

/// Keeps in `buf` the last [`END_BYTES`] of `buf` followed by `bytes`.
fn keep_tail(buf: &mut Vec<u8>, bytes: &[u8]) {
    let from_bytes = bytes.len().min(END_BYTES);
    let from_buf = (END_BYTES - from_bytes).min(buf.len());
    buf.drain(..buf.len() - from_buf);
    buf.extend_from_slice(bytes.get(bytes.len() - from_bytes..).unwrap_or_default());
    if buf.capacity() > 2 * END_BYTES {
        buf.shrink_to(END_BYTES);
    }
}

/// A non-streaming body as it passes, chunk by chunk (the response is never held by this):
/// kept whole up to [`MAX_JSON_BODY_BYTES`] for an exact parse at the end; beyond that only
/// its first and last [`END_BYTES`], scanned leniently (the tail, then the head).
#[derive(Debug, Default)]
pub struct BodyUsage {
    /// The body so far, while it fits.
    body: Vec<u8>,
    /// Once it did not fit: its beginning and its end so far.
    head: Vec<u8>,
    tail: Vec<u8>,
    too_large: bool,
}

impl BodyUsage {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.too_large {
            keep_tail(&mut self.tail, chunk);
            return;
        }
        if self.body.len() + chunk.len() <= MAX_JSON_BODY_BYTES {
            reserve_capped(&mut self.body, chunk.len(), MAX_JSON_BODY_BYTES);
            self.body.extend_from_slice(chunk);
            return;
        }
        self.too_large = true;
        let body = std::mem::take(&mut self.body);
        let from_body = body.len().min(END_BYTES);
        self.head
            .extend_from_slice(body.get(..from_body).unwrap_or_default());
        let from_chunk = (END_BYTES - from_body).min(chunk.len());
        self.head
            .extend_from_slice(chunk.get(..from_chunk).unwrap_or_default());
        keep_tail(&mut self.tail, &body);
        keep_tail(&mut self.tail, chunk);
    }

    /// At the end of the body: the usage found (an exact parse first, a lenient scan next).
    /// Resets this for another body.
    pub fn finish(&mut self) -> Option<Usage> {
        let usage = if self.too_large {
            usage_of(&self.tail).or_else(|| usage_of(&self.head))
        } else {
            usage_in_json(&self.body).or_else(|| usage_of(&self.body))
        };
        *self = BodyUsage::default();
        usage
    }
}
