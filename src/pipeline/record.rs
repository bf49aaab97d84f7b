//! Record: the access-log line of a request the router handles (when `access_log` is on).
//!
//! Begun when the request headers are read ([`begin`]: which endpoint, who sent it), timed
//! when the router has the whole request ([`started`]); filled in as the stages go (the requested model, the decision, who served, when the answer
//! began, a reply's status and error); published once, at the end of the stream, as filter
//! state with the status, latency and usage ([`publish`]). A line is plain data: nothing
//! here reads the body or decides anything.

use crate::audit::{self, DecisionRecord, RequestRecord, UsageRecord};
use crate::clients::{bare_credential, credential, Client};
use crate::host::Host;
use crate::pipeline::answer::Report;
use crate::pipeline::identify::ClientHeaders;
use crate::pipeline::track::StreamEnd;
use crate::sha256::key_id;
use crate::usage::Usage;

/// The record of a request sent by `caller` (when known); its time comes with [`started`].
pub(super) fn begin(
    host: &dyn Host,
    client: &ClientHeaders,
    caller: Option<&Client>,
    endpoint: &'static str,
) -> RequestRecord {
    // A known client is logged by name; otherwise by an id of its credential, if any.
    let caller = caller.map(|c| c.name.clone());
    let credential = match caller {
        Some(_) => None,
        None => credential(|name| client.get(host, name)),
    };
    RequestRecord {
        request_id: client
            .get(host, "x-request-id")
            .map(|id| audit::loggable(&id)),
        client: caller,
        client_key_id: credential.map(|c| key_id(bare_credential(&c))),
        endpoint,
        attempts: 0,
        ..RequestRecord::default()
    }
}

/// The request started at `start_ms` (once: a later call keeps the first time).
pub(super) fn started(record: Option<&mut RequestRecord>, start_ms: u64) {
    if let Some(r) = record.filter(|r| r.time.is_empty()) {
        r.time = audit::rfc3339_millis(start_ms);
    }
}

/// What the body asked for: the model (`auto` when the router chooses) and whether it
/// streams.
pub(super) fn requested(record: Option<&mut RequestRecord>, model: Option<&str>, stream: bool) {
    if let Some(r) = record {
        r.requested_model = Some(audit::loggable(model.unwrap_or("auto")));
        r.stream = stream;
    }
}

/// The routing decision as logged: the report's and the chosen target's.
pub(super) fn decision(r: &Report, upstream: &str, model: &str) -> DecisionRecord {
    DecisionRecord {
        task: r.task,
        complexity: r.complexity,
        tags: r
            .tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        rule: r.rule.clone(),
        target: format!("{upstream}/{model}"),
        upstream: upstream.to_owned(),
        model: model.to_owned(),
    }
}

/// After failover: the target that served replaces the first candidate in the decision.
pub(super) fn served_by(record: Option<&mut RequestRecord>, upstream: &str, model: &str) {
    if let Some(d) = record.and_then(|rec| rec.decision.as_mut()) {
        d.target = format!("{upstream}/{model}");
        d.upstream = upstream.to_owned();
        d.model = model.to_owned();
    }
}

/// The response headers arrived: after how many attempts and how long.
pub(super) fn answered(record: Option<&mut RequestRecord>, attempts: u32, ttfb_ms: u64) {
    if let Some(r) = record {
        r.attempts = attempts;
        r.ttfb_ms = Some(ttfb_ms);
    }
}

/// Publishes the access-log line (decision and usage in it) as filter state. `routed`: the
/// usage and cost of a request that was sent on.
pub(super) fn publish(
    host: &mut dyn Host,
    mut record: RequestRecord,
    end: &StreamEnd,
    start_ms: u64,
    routed: Option<(Option<Usage>, Option<f64>)>,
) {
    if record.status.is_none() {
        record.status = end.code();
    }
    started(Some(&mut record), start_ms);
    record.latency_ms = Some(end.now_ms().saturating_sub(start_ms));
    if let Some((usage, cost)) = routed {
        record.attempts = record.attempts.max(1);
        record.usage = UsageRecord::new(usage, cost);
    }
    if let Err(e) = host.set_property(audit::STATE_LOG, &audit::to_json(&record)) {
        log::debug!("llm-router: no access-log record: {e}");
    }
}
