//! The per-request record the router publishes for access logs: Envoy filter state
//! `wasm.llm_router.log`, one JSON line with everything (decision, usage, status, times), set
//! once at the end of the stream (one host call per request), so that an access log with
//! `%FILTER_STATE(wasm.llm_router.log:PLAIN)%` writes one line per request. Never holds a client key, only its id ([`crate::sha256::key_id`]).

use serde::Serialize;

use crate::usage::Usage;

/// The filter-state name (Envoy prefixes it with `wasm.`).
pub const STATE_LOG: &str = "llm_router.log";

/// Longest client-given string (model name, request id) written to the log.
pub const MAX_LOGGED_BYTES: usize = 256;

/// How the router routed a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub task: &'static str,
    pub complexity: &'static str,
    pub tags: Vec<String>,
    /// `rule:<name>`, `model:<alias>`, `default` or `passthrough`.
    pub rule: String,
    /// The target that served the request (`upstream/model`), after any failover.
    pub target: String,
    pub upstream: String,
    pub model: String,
}

/// Tokens and cost of a finished request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRecord {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// In the currency of the target's configured price; `None` without a price or usage.
    pub cost: Option<f64>,
}

impl UsageRecord {
    pub fn new(usage: Option<Usage>, cost: Option<f64>) -> UsageRecord {
        match usage {
            Some(u) => UsageRecord {
                prompt_tokens: Some(u.prompt),
                completion_tokens: Some(u.completion),
                total_tokens: Some(u.total),
                cached_tokens: u.cached,
                reasoning_tokens: u.reasoning,
                cost,
            },
            None => UsageRecord::default(),
        }
    }
}

/// One access-log line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    /// When the router had the request, its body read whole (RFC 3339, UTC, milliseconds).
    pub time: String,
    pub request_id: Option<String>,
    /// The configured client (`clients.keys[].name`) that sent the request, if known.
    pub client: Option<String>,
    /// Id of the client's credential (a hash prefix), if it sent one and is not a known
    /// client.
    pub client_key_id: Option<String>,
    /// `chat`, `completions`, `responses`, `embeddings`, `messages`, `models`, or `other`
    /// (a request refused before it was passed through).
    pub endpoint: &'static str,
    /// The model the client asked for (`auto` when it left the choice to the router).
    pub requested_model: Option<String>,
    pub stream: bool,
    #[serde(flatten)]
    pub decision: Option<DecisionRecord>,
    /// Attempts the request took (more than one after failover).
    pub attempts: u32,
    pub status: Option<u32>,
    /// Set when the router answered the request itself with an error.
    pub error: Option<&'static str>,
    pub latency_ms: Option<u64>,
    pub ttfb_ms: Option<u64>,
    #[serde(flatten)]
    pub usage: UsageRecord,
}

/// A client-given string fit for the log: at most [`MAX_LOGGED_BYTES`], cut at a character
/// boundary (JSON escaping makes any content safe).
pub fn loggable(s: &str) -> String {
    if s.len() <= MAX_LOGGED_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_LOGGED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// JSON of a record; `{}` if it cannot be written (it always can: plain fields only).
pub fn to_json<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec())
}

/// `2026-11-23T15:32:51.806Z` for milliseconds since the Unix epoch.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let t = crate::calendar::utc(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // date -u -d @1795447941 → 2026-11-23T15:32:21Z
        assert_eq!(
            rfc3339_millis(1_795_447_941_806),
            "2026-11-23T15:32:21.806Z"
        );
        // Leap day and the turn of a century.
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(4_107_542_399_999),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn cuts_long_client_strings_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let cut = loggable(&long);
        assert!(cut.len() <= MAX_LOGGED_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(loggable("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn a_record_is_one_json_line_with_flat_fields() {
        let record = RequestRecord {
            time: rfc3339_millis(0),
            request_id: Some("r-1".into()),
            endpoint: "chat",
            requested_model: Some("auto".into()),
            decision: Some(DecisionRecord {
                task: "coding",
                complexity: "low",
                tags: vec!["legal".into()],
                rule: "rule:code".into(),
                target: "a/m".into(),
                upstream: "a".into(),
                model: "m".into(),
            }),
            attempts: 1,
            status: Some(200),
            usage: UsageRecord::new(
                Some(Usage {
                    prompt: 10,
                    completion: 5,
                    total: 15,
                    cached: Some(4),
                    reasoning: None,
                }),
                Some(0.25),
            ),
            ..RequestRecord::default()
        };
        let json = to_json(&record);
        assert!(!json.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["rule"], "rule:code");
        assert_eq!(v["target"], "a/m");
        assert_eq!(v["tags"][0], "legal");
        assert_eq!(v["prompt_tokens"], 10);
        assert_eq!(v["cached_tokens"], 4);
        assert_eq!(v["reasoning_tokens"], serde_json::Value::Null);
        assert_eq!(v["cost"], 0.25);
        assert_eq!(v["client_key_id"], serde_json::Value::Null);
        // A refused request has no decision fields at all.
        let refused = RequestRecord {
            status: Some(404),
            error: Some("model_not_found"),
            ..RequestRecord::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&to_json(&refused)).unwrap();
        assert!(v.get("rule").is_none());
        assert_eq!(v["error"], "model_not_found");
    }
}
