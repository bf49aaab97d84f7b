//! Failover on a provider's "context length exceeded" 400. The classifier's prompt estimate
//! is no tokenizer, so a prompt can still be too long for the target that was chosen. When a
//! failover attempt (`attempt.rs`) answers 400 and a later candidate has a larger context
//! window (or an undeclared one), the attempt filter holds that answer, reads its body, and
//! if it says the context length was exceeded (OpenAI `"code": "context_length_exceeded"`,
//! "maximum context length" as OpenAI, vLLM and Mistral word it, Anthropic "prompt is too
//! long"), it drops the later candidates whose windows are not larger from the failover list
//! and marks the answer with [`HEADER_RETRY`], which the failover route retries on
//! (`retry_on: retriable-headers`). Any other 400, or one with no larger candidate left,
//! goes to the client as it came.
//!
//! The next attempt cannot be told through the request headers (Envoy lets a filter change
//! them only before they go on), so the shortened list is published as filter state of the
//! client's stream, which upstream filters share across attempts: `llm_router.ctx.<n>`
//! after attempt `n` (each name is written once: Envoy's default filter state is write-once).
//! A later attempt reads back to the newest one, and only when an earlier attempt could have
//! skipped a candidate (a declared window followed by one no larger): otherwise there is
//! nothing to read and no host call is made.
//!
//! Envoy's router crashes retrying an answer that an upstream filter held before 1.37
//! ([`MIN_ENVOY`]); there the attempt filter holds no 400 (`wasm.rs` reads the version).

use serde_json::Value;

use crate::config::plan::Plan;
use crate::host::Host;

/// Response: set by the attempt filter on a 400 that should fail over to a larger window;
/// the failover route's `retriable_headers` matches it. The hop removes a provider's own.
pub const HEADER_RETRY: &str = "x-llm-router-retry";
/// The value of [`HEADER_RETRY`].
pub const RETRY_CONTEXT: &str = "context_length_exceeded";
/// A 400 body longer than this is not held (error bodies are small).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the error texts of providers say when the prompt did not fit (lower case).
const MARKERS: [&str; 3] = [
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
];

/// Whether a 400's JSON body says the context length was exceeded: its error code, type or
/// message (`error.*`, or top-level `message` / `code` / `detail` as vLLM and FastAPI servers
/// answer). Only those strings are looked at, so a prompt quoted elsewhere in an error
/// cannot make it one.
pub fn is_context_length_error(body: &[u8]) -> bool {
    if body.len() > MAX_ERROR_BODY {
        return false;
    }
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let error = doc.get("error");
    let texts = [
        error.and_then(Value::as_str),
        error.and_then(|e| e.get("code")).and_then(Value::as_str),
        error.and_then(|e| e.get("type")).and_then(Value::as_str),
        error.and_then(|e| e.get("message")).and_then(Value::as_str),
        doc.get("code").and_then(Value::as_str),
        doc.get("message").and_then(Value::as_str),
        doc.get("detail").and_then(Value::as_str),
    ];
    let said = texts.into_iter().flatten().any(|text| {
        let text = text.to_ascii_lowercase();
        MARKERS.iter().any(|m| text.contains(m))
    });
    said
}

/// The failover list after `keys[index]` failed for its context window: the candidates
/// tried so far, then the later ones whose window is larger than the failed one's (or
/// undeclared; all of them when the failed one's is undeclared). `None` when no later
/// candidate qualifies. Also returns the later candidates left out.
pub fn after_context_error(
    plan: &Plan,
    keys: &[String],
    index: usize,
) -> Option<(Vec<String>, Vec<String>)> {
    let window = |key: &str| plan.targets.get(key).and_then(|t| t.caps.context_window);
    let failed = window(keys.get(index)?);
    let (tried, later) = keys.split_at(index + 1);
    let (larger, smaller): (Vec<String>, Vec<String>) =
        later
            .iter()
            .cloned()
            .partition(|k| match (failed, window(k)) {
                (Some(failed), Some(w)) => w > failed,
                _ => true,
            });
    if larger.is_empty() {
        return None;
    }
    Some(([tried, &larger].concat(), smaller))
}

/// The first Envoy whose router survives retrying an answer that an upstream filter held
/// (envoyproxy/envoy#41879): Envoy 1.36.4 crashes there (measured), 1.37.0 does not.
pub const MIN_ENVOY: (u64, u64) = (1, 37);

/// Whether the Envoy of this version (major, minor from its `node.user_agent_build_version`)
/// may hold a 400 for a context-window retry. Unknown: no.
pub fn envoy_supports_context_retry(version: Option<(u64, u64)>) -> bool {
    version.is_some_and(|v| v >= MIN_ENVOY)
}

/// The filter state name of the failover list after attempt `attempt`'s context error.
pub fn state_name(attempt: u32) -> String {
    format!("llm_router.ctx.{attempt}")
}

/// Whether a context error of one of the first `tried` candidates could have made a later
/// one skipped: some candidate with a declared window is followed by one whose declared
/// window is not larger.
pub fn may_have_skipped(plan: &Plan, keys: &[String], tried: usize) -> bool {
    let window = |key: &String| plan.targets.get(key).and_then(|t| t.caps.context_window);
    keys.iter().enumerate().take(tried).any(|(i, k)| {
        let Some(failed) = window(k) else {
            return false;
        };
        keys.iter()
            .skip(i + 1)
            .any(|later| window(later).is_some_and(|w| w <= failed))
    })
}

/// The failover list attempt `number` goes by: the newest one an earlier attempt's context
/// error published, if any could have been (`keys`: the list the request filter sent).
pub fn current_list(
    host: &dyn Host,
    plan: &Plan,
    keys: &[String],
    number: u32,
) -> Option<(u64, Vec<String>)> {
    let tried = usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX);
    if !may_have_skipped(plan, keys, tried) {
        return None;
    }
    (1..number).rev().find_map(|n| {
        let value = host.property(&[&state_name(n)]).ok().flatten()?;
        super::attempt::parse_failover(std::str::from_utf8(&value).ok()?)
    })
}

#[cfg(test)]
#[path = "context_retry_tests.rs"]
mod tests;
