//! Answer: what the client gets back, from the upstream or from the router itself.
//!
//! Takes the routing decision as the response headers report it (`Report`) and the
//! upstream's response headers; gives their edits: the diagnostic `x-llm-router-*` headers,
//! the caller's `x-ratelimit-*` instead of the provider's, and, after failover, who served
//! (`served`). At the end of a held body, the cost (`cost`, `x-llm-router-cost`). A
//! request the router does not send on is answered from its `Refusal`, and
//! `GET /v1/models` from the catalog (`models`).

use crate::classify::Classification;
use crate::clients::ledger::{rate_limit_headers, RATE_LIMIT_HEADERS};
use crate::clients::{Client, Quota};
use crate::config::plan::{is_header_value_safe, Plan, Price, TargetRef};
use crate::errors::ApiError;
use crate::host::{header_value, Host};
use crate::models::ModelsAnswer;
use crate::pipeline::attempt;
use crate::pipeline::context_retry::HEADER_RETRY;
use crate::pipeline::identify::ClientHeaders;
use crate::pipeline::track::now_ms;
use crate::rewrite::headers::HeaderEdits;
use crate::usage::{BodyEnd, JsonEnd, Usage};

pub const HEADER_UPSTREAM: &str = "x-llm-router-upstream";
pub const HEADER_MODEL: &str = "x-llm-router-model";
pub const HEADER_TASK: &str = "x-llm-router-task";
pub const HEADER_COMPLEXITY: &str = "x-llm-router-complexity";
pub const HEADER_RULE: &str = "x-llm-router-rule";
pub const HEADER_TAGS: &str = "x-llm-router-tags";
pub const HEADER_ATTEMPTS: &str = "x-llm-router-attempts";
pub const HEADER_COST: &str = "x-llm-router-cost";

/// Longest client-given model name echoed in `x-llm-router-model`.
pub const MAX_ECHOED_MODEL_BYTES: usize = 256;

/// What the response headers report about the routing decision.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Report {
    pub(super) upstream: String,
    pub(super) model: Option<String>,
    pub(super) task: &'static str,
    pub(super) complexity: &'static str,
    pub(super) rule: String,
    pub(super) tags: String,
    /// Sent through the failover cluster: the attempt filter reports who served it.
    pub(super) failover: bool,
    /// The target's key (`upstream/model`); after failover, the one that served.
    pub(super) target: String,
}

impl Report {
    pub(super) fn new(source: &str, upstream: &str, model: &str, c: &Classification) -> Report {
        Report {
            upstream: upstream.to_owned(),
            model: echoable(model),
            task: task_name(c),
            complexity: complexity_name(c),
            rule: source.to_owned(),
            tags: c.tags.join(","),
            failover: false,
            target: String::new(),
        }
    }

    /// After failover: the target `key` served the request instead of the first candidate.
    /// Gives its configuration, when the plan has it.
    pub(super) fn served_by<'p>(&mut self, plan: &'p Plan, key: &str) -> Option<&'p TargetRef> {
        self.target = key.to_owned();
        let t = plan.targets.get(key)?;
        if let Some(up) = plan.upstream(t.upstream) {
            self.upstream = up.name.clone();
        }
        self.model = echoable(&t.model);
        Some(t)
    }

    /// The price of the target that served.
    pub(super) fn price(&self, plan: &Plan) -> Option<Price> {
        plan.targets.get(&self.target)?.price
    }
}

/// For a request sent through the failover cluster: the target key and attempt number
/// that the attempt filter reported in the response (and removes them from it).
/// `headers`: the response headers, already read.
pub(super) fn served(
    report: Option<&Report>,
    edits: &mut HeaderEdits,
    headers: &[(String, Vec<u8>)],
) -> Option<(String, u32)> {
    if !report.is_some_and(|r| r.failover) {
        return None;
    }
    // A context-length retry Envoy did not make: the mark is internal.
    edits.set(HEADER_RETRY, None);
    edits.set(attempt::HEADER_SERVED, None);
    let served = header_value(headers, attempt::HEADER_SERVED)?;
    attempt::parse_served(served)
}

/// Stamps the diagnostic `x-llm-router-*` response headers. `attempts`: reported by the
/// failover attempt that served.
pub(super) fn stamp_diagnostics(
    edits: &mut HeaderEdits,
    report: Option<&Report>,
    attempts: Option<u32>,
) {
    let Some(r) = report else {
        return;
    };
    // `None` removes a value the upstream sent: diagnostics are the router's own.
    let attempts = attempts.map(|n| n.to_string());
    edits.set(HEADER_UPSTREAM, Some(&r.upstream));
    edits.set(HEADER_MODEL, r.model.as_deref());
    edits.set(HEADER_ATTEMPTS, attempts.as_deref());
    edits.set(HEADER_TASK, Some(r.task));
    edits.set(HEADER_COMPLEXITY, Some(r.complexity));
    edits.set(HEADER_RULE, Some(&r.rule));
    edits.set(HEADER_TAGS, Some(r.tags.as_str()).filter(|t| !t.is_empty()));
    edits.set(HEADER_COST, None);
}

/// The caller's `x-ratelimit-*` instead of the provider's (which describe the router's
/// provider key, shared by every client).
pub(super) fn stamp_rate_limits(edits: &mut HeaderEdits, quota: &Quota) {
    let ours = rate_limit_headers(quota);
    for name in RATE_LIMIT_HEADERS {
        let value = ours
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str());
        edits.set(name, value);
    }
}

/// Whether the response headers wait for the end of the body: `x-llm-router-cost` needs
/// the usage there (a successful, non-streaming answer of a priced target only).
/// `headers`: the response headers, already read.
pub(super) fn waits_for_cost(
    plan: &Plan,
    headers: &[(String, Vec<u8>)],
    end_of_stream: bool,
    event_stream: bool,
    priced: bool,
) -> bool {
    let status = header_value(headers, ":status");
    plan.usage.cost_header
        && !end_of_stream
        && !event_stream
        && status.is_some_and(|s| s.starts_with('2'))
        && priced
}

/// What Envoy holds of a response body while the headers wait for it: how many bytes, and
/// where its JSON ends.
#[derive(Debug, Default)]
pub(super) struct HeldBody {
    held: usize,
    end: JsonEnd,
}

impl HeldBody {
    /// Whether the held body is whole with its newest bytes (`body_size` held in all). A body
    /// Envoy ends with trailers (its decompressor does) has no end of stream here, and Envoy
    /// gives those trailers only to a filter that lets the body go: where the JSON closes is
    /// the end. A body that is no JSON object or array is let go at once (it has no usage).
    pub(super) fn is_closed(&mut self, host: &dyn Host, body_size: usize) -> bool {
        let new = host
            .response_body_range(self.held, body_size.saturating_sub(self.held))
            .ok()
            .flatten()
            .unwrap_or_default();
        self.held = body_size.max(self.held);
        self.end.push(&new) != BodyEnd::Open
    }
}

/// What the request cost by the served target's price and the reported usage.
pub(super) fn cost(usage: Option<Usage>, price: Option<Price>) -> Option<f64> {
    let usage = usage?;
    let price = price?;
    let micro = price.micro_cost(usage.prompt, usage.cached.unwrap_or(0), usage.completion);
    Some(micro / 1_000_000.0)
}

/// A cost for `x-llm-router-cost`: plain decimal, up to ten places, no trailing zeros.
pub(super) fn format_cost(cost: f64) -> String {
    let s = format!("{:.10}", cost.max(0.0));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// The `/v1/models` answer for `path`, when the endpoint is on and the path is its.
pub(super) fn models(
    plan: &Plan,
    client: &ClientHeaders,
    caller: Option<&Client>,
    path: &str,
) -> Option<ModelsAnswer> {
    let anthropic = client.has("anthropic-version");
    // A client limited to some models sees only those.
    plan.models.as_ref()?.answer_for(path, anthropic, caller)
}

/// Why a request is answered by the router itself.
pub(super) enum Refusal {
    Api(ApiError),
    /// Over one of the client's limits (429), with `retry-after` and `x-ratelimit-*`.
    Limited(ApiError, Vec<(&'static str, String)>),
    /// Every candidate is unavailable and the configuration says to reject (503 +
    /// `Retry-After`).
    AllUnavailable {
        until_ms: u64,
    },
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl Refusal {
    /// The error the client is answered with, and the headers that go with it.
    pub(super) fn into_reply(self, host: &dyn Host) -> (ApiError, Vec<(&'static str, String)>) {
        match self {
            Refusal::Api(e) => (e, Vec::new()),
            Refusal::Limited(e, headers) => (e, headers),
            Refusal::AllUnavailable { until_ms } => {
                let now = now_ms(host);
                let secs = until_ms.saturating_sub(now).div_ceil(1000).max(1);
                let e = ApiError {
                    status: 503,
                    message: format!(
                        "Every target for this request is cooling down or over its budget; retry in {secs} s."
                    ),
                    kind: "service_unavailable_error",
                    param: None,
                    code: "no_available_target",
                };
                (e, vec![("retry-after", secs.to_string())])
            }
        }
    }
}

/// A model name fit for a response header: safe and short (a passthrough model comes from
/// the client; an oversized header block would break the client's HTTP/2 stream).
fn echoable(model: &str) -> Option<String> {
    (model.len() <= MAX_ECHOED_MODEL_BYTES && is_header_value_safe(model)).then(|| model.to_owned())
}

fn task_name(c: &Classification) -> &'static str {
    use crate::classify::Task::*;
    match c.task {
        Coding => "coding",
        Reasoning => "reasoning",
        Math => "math",
        Vision => "vision",
        Summarization => "summarization",
        Extraction => "extraction",
        Embedding => "embedding",
        General => "general",
    }
}

fn complexity_name(c: &Classification) -> &'static str {
    use crate::classify::Complexity::*;
    match c.complexity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Xhigh => "xhigh",
    }
}
