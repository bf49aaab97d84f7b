//! One failover attempt, as the router's *upstream* filter sees it on the failover cluster.
//!
//! The request filter chose the candidates and sent the request to the failover cluster with
//! the list in [`HEADER_FAILOVER`]; Envoy's router sends it there once per attempt (a retry
//! on 429, 5xx, reset or connect failure) and runs this filter for each. Attempt `n`
//! (`x-envoy-attempt-count`) goes to the `n`-th candidate: the filter sets its model in the
//! body, its credential, extra headers, host, path prefix and the cluster the failover hop
//! routes by; tracks the attempt on the health board; and reports in the response which
//! target served it ([`HEADER_SERVED`]), for the request filter's diagnostic headers.
//!
//! Envoy may hand every attempt the same header map, so each rewrite is complete: it
//! removes what an earlier attempt set and starts from the client's path and host, kept in
//! [`HEADER_PATH`] and [`HEADER_AUTHORITY`]. The failover hop removes the internal headers
//! before the provider sees them.
//!
//! A 400 that says the context length was exceeded fails over too, to a later candidate
//! with a larger window (`context_retry.rs`): the filter holds that answer until its body
//! is read, publishes the shortened list for the next attempts (filter state of the client's
//! stream) and marks the answer for the route's retry policy.

use std::rc::Rc;

use serde_json::Value;

use crate::config::capabilities::Capability;
use crate::config::plan::{Plan, TargetRef, Upstream};
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::health::deferred::Deferred;
use crate::health::{Admission, HealthBoard};
use crate::host::{header_value, Host};
use crate::metrics::Metrics;
use crate::path::{self, PathKind};
use crate::pipeline::context_retry::{
    after_context_error, current_list, is_context_length_error, state_name, HEADER_RETRY,
    MAX_ERROR_BODY, RETRY_CONTEXT,
};
use crate::pipeline::identify::ClientHeaders;
use crate::pipeline::request::Flow;
use crate::pipeline::rewrite::{replace_body, rewrite_for_upstream};
use crate::pipeline::track::{now_ms, response_flags_from_names, Accounting, Meter, StreamEnd};
use crate::pipeline::translation;
use crate::pipeline::StreamFlow;
use crate::rewrite::body::{edit_object, json_string};
use crate::rewrite::headers::{HeaderEdits, Side};
use crate::translate::Format;

/// Request: `<prompt token estimate>;<key>,<key>,...`, the candidates' health keys in order.
pub const HEADER_FAILOVER: &str = "x-llm-router-failover";
/// Request: the client's `:path`.
pub const HEADER_PATH: &str = "x-llm-router-path";
/// Request: the client's `:authority`.
pub const HEADER_AUTHORITY: &str = "x-llm-router-authority";
/// Response: `<attempt>;<key>` of the target that answered.
pub const HEADER_SERVED: &str = "x-llm-router-served";
/// Response: Envoy's response flags of the failover hop's own stream (`%RESPONSE_FLAGS%`),
/// e.g. `UF` when the provider could not be reached.
pub const HEADER_HOP_FLAGS: &str = "x-llm-router-hop-flags";

/// Headers that only the router's two filters exchange; a client's are removed.
pub const INTERNAL_REQUEST_HEADERS: [&str; 3] = [HEADER_FAILOVER, HEADER_PATH, HEADER_AUTHORITY];

/// Bytes kept as they are in an encoded key; any other is `%XX`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b)
}

/// The failover header value: keys percent-encoded (so that `,` and `;` stay separators and
/// any model name is header-safe).
pub fn encode_failover(tokens: u64, keys: &[&str]) -> String {
    let mut out = format!("{tokens};");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_into(key, &mut out);
    }
    out
}

fn encode_into(key: &str, out: &mut String) {
    for b in key.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn decode(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses [`HEADER_FAILOVER`]: the token estimate and the keys.
pub fn parse_failover(value: &str) -> Option<(u64, Vec<String>)> {
    let (tokens, keys) = value.split_once(';')?;
    let tokens = tokens.trim().parse().ok()?;
    let keys: Option<Vec<String>> = keys.split(',').map(decode).collect();
    let keys = keys?;
    (!keys.is_empty() && keys.iter().all(|k| !k.is_empty())).then_some((tokens, keys))
}

/// [`HEADER_SERVED`] for attempt `attempt` to `key`.
pub fn served(attempt: u32, key: &str) -> String {
    let mut out = format!("{attempt};");
    encode_into(key, &mut out);
    out
}

/// Parses [`HEADER_SERVED`]: the key and the attempt number.
pub fn parse_served(value: &str) -> Option<(String, u32)> {
    let (attempt, key) = value.split_once(';')?;
    Some((decode(key)?, attempt.trim().parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    number: u32,
    key: String,
    tokens: u64,
    /// The candidate the previous attempt went to.
    previous: Option<String>,
    /// Every candidate, in order, and the index of this attempt's.
    keys: Vec<String>,
    index: usize,
    /// The client's API, when some candidate speaks another (`upstreams.*.format`).
    mixed: Option<Format>,
    /// The client's API and this target's, when the attempt is translated.
    translate: Option<(Format, Format)>,
}

/// A 400 held until its body says whether the context length was exceeded: the failover
/// list for the next attempt, and the candidates it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    keys: Vec<String>,
    skipped: Vec<String>,
}

pub struct AttemptFlow {
    plan: Rc<Plan>,
    board: HealthBoard,
    attempt: Option<Attempt>,
    replied: bool,
    /// Rewritten (or, for attempt 1, routed) and sent on.
    sent: bool,
    metrics: Option<Rc<Metrics>>,
    acc: Accounting,
    /// The answer is a 400 held for its body (a larger context window is left to try).
    held: Option<Held>,
    /// Whether 400s may be held for a context-window retry (the Envoy survives it).
    context_retry: bool,
    /// This attempt's request headers, read once (each attempt gets its own copy).
    client: ClientHeaders,
    /// The client's endpoint (from the path the request filter kept), for the shape of
    /// this filter's own replies and the attempt's translation.
    endpoint: Option<Endpoint>,
}

impl AttemptFlow {
    pub fn new(plan: Rc<Plan>) -> AttemptFlow {
        AttemptFlow {
            plan,
            board: HealthBoard::default(),
            attempt: None,
            replied: false,
            sent: false,
            metrics: None,
            acc: Accounting::default(),
            held: None,
            context_retry: true,
            client: ClientHeaders::default(),
            endpoint: None,
        }
    }

    /// Whether a context-length 400 may fail over (off on an Envoy that would crash
    /// retrying it: [`crate::pipeline::context_retry::MIN_ENVOY`]).
    pub fn with_context_retry(mut self, on: bool) -> AttemptFlow {
        self.context_retry = on;
        self
    }

    /// Counts each attempt in its target's Envoy stats.
    pub fn with_metrics(mut self, metrics: Rc<Metrics>) -> AttemptFlow {
        self.acc = Accounting::new(Some(Rc::clone(&metrics)));
        self.acc.tracker.set_board(self.board.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Successful finishes wait in this worker's `deferred` for its next write to the
    /// target's health (see `health::deferred`).
    pub fn with_deferred_health(mut self, deferred: Rc<Deferred>) -> AttemptFlow {
        self.board = HealthBoard::default().with_deferred(deferred);
        self.acc.tracker.set_board(self.board.clone());
        self
    }

    /// The target key this attempt goes to, once the headers named it.
    pub fn target_key(&self) -> Option<&str> {
        self.attempt.as_ref().map(|a| a.key.as_str())
    }

    pub fn is_tracked(&self) -> bool {
        self.acc.tracker.is_tracked()
    }

    /// Rewrites the attempt for its target and admits it on the health board. Attempt 1 was
    /// rewritten for the first candidate by the request filter: only the cluster the hop
    /// routes by is still the failover cluster's (and its body is not needed).
    fn send(&mut self, host: &mut dyn Host, body_size: Option<usize>) -> Flow {
        let plan = Rc::clone(&self.plan);
        let Some(attempt) = self.attempt.clone() else {
            return Flow::Continue;
        };
        let Some((target, upstream)) = plan
            .targets
            .get(&attempt.key)
            .and_then(|t| Some((t, plan.upstream(t.upstream)?)))
        else {
            return self.reply(host, &ApiError::internal("unknown failover target"));
        };
        let rewritten = if attempt.number == 1 && attempt.translate.is_none() {
            let mut edits = HeaderEdits::default();
            edits.set(&plan.cluster_header, Some(&upstream.cluster));
            self.client.apply(host, &edits)
        } else {
            let to = (target, upstream);
            rewrite_attempt(host, &plan, &mut self.client, to, &attempt, body_size)
        };
        if let Err(e) = rewritten {
            return self.reply(host, &e);
        }
        self.start(host, &attempt, target);
        self.sent = true;
        Flow::Continue
    }

    /// Admits the attempt on the health board and starts counting it in stats.
    fn start(&mut self, host: &mut dyn Host, attempt: &Attempt, target: &TargetRef) {
        let plan = Rc::clone(&self.plan);
        let now = now_ms(host);
        if plan.health.enabled {
            let policy = &plan.health.policy;
            // The request filter found this target usable a moment ago: it is tried even if
            // another worker has since taken its probe or its last budget.
            match self.board.update(host, &attempt.key, |h| {
                match h.admit(now, policy, &target.budget, attempt.tokens) {
                    Admission::Admitted { probe } => probe,
                    Admission::Refused { .. } => {
                        h.on_start(now, attempt.tokens);
                        false
                    }
                }
            }) {
                Ok((_, probe)) => {
                    self.acc
                        .tracker
                        .start(&attempt.key, probe, now, attempt.tokens, &target.budget)
                }
                Err(e) => log::warn!("llm-router: attempt not tracked: {e}"),
            }
        }
        if let Some(m) = &self.metrics {
            if let Some(previous) = &attempt.previous {
                m.failover(host, m.target(previous));
            }
            self.acc.meter = Some(Meter::start(
                m,
                host,
                m.target(&attempt.key),
                attempt.tokens,
                now,
            ));
        }
    }

    /// Lets a held 400 go (`body_size` bytes of it held; `end`: all of it). When its body
    /// says the context length was exceeded, the next attempt goes to a larger window.
    fn release(&mut self, host: &mut dyn Host, body_size: usize, end: bool) -> Flow {
        let held = self.held.take();
        // At the end, all of what Envoy holds.
        let size = if end { usize::MAX } else { body_size };
        let body = host.response_body(size).ok().flatten().unwrap_or_default();
        if let (Some(held), true) = (held, end && is_context_length_error(&body)) {
            self.retry_elsewhere(host, &held);
        }
        let _ = self.acc.on_response_chunk(&body, end);
        Flow::Continue
    }

    /// The next attempt goes to the first of `held.keys` after this one: when candidates
    /// are left out, the shortened list is published for the later attempts (filter state
    /// shared by the attempts of the client's stream); then the answer is marked for the
    /// route's retry policy.
    fn retry_elsewhere(&mut self, host: &mut dyn Host, held: &Held) {
        let Some(attempt) = &self.attempt else {
            return;
        };
        if !held.skipped.is_empty() {
            let keys: Vec<&str> = held.keys.iter().map(String::as_str).collect();
            let list = encode_failover(attempt.tokens, &keys);
            let name = state_name(attempt.number);
            if let Err(e) = host.set_property(&name, list.as_bytes()) {
                log::warn!("llm-router: no failover after a context-length error: {e}");
                return;
            }
        }
        if let Err(e) = host.set_response_header(HEADER_RETRY, Some(RETRY_CONTEXT)) {
            log::warn!("llm-router: no failover after a context-length error: {e}");
            return;
        }
        if let Some(m) = &self.metrics {
            for key in &held.skipped {
                m.skips.count(key, Capability::ContextWindow);
            }
        }
    }

    fn reply(&mut self, host: &mut dyn Host, error: &ApiError) -> Flow {
        self.replied = true;
        self.acc.cancel(host, &self.plan);
        // An Anthropic client gets Anthropic's error shape, as from the request filter.
        let body = match self.endpoint {
            Some(Endpoint::AnthropicMessages) => error.anthropic_body(),
            _ => error.body(),
        };
        if let Err(e) =
            host.send_local_reply(error.status, &[("content-type", "application/json")], &body)
        {
            log::error!("could not send the {} reply: {e}", error.status);
        }
        Flow::Pause
    }
}

impl StreamFlow for AttemptFlow {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        self.client = ClientHeaders::read(host);
        let Some(list) = self.client.get(host, HEADER_FAILOVER) else {
            // Not sent by the request filter: nothing to do.
            return Flow::Continue;
        };
        self.endpoint = self
            .client
            .get(host, HEADER_PATH)
            .and_then(|p| match path::classify(&p) {
                PathKind::Endpoint { endpoint, .. } => Some(endpoint),
                _ => None,
            });
        let number = self
            .client
            .get(host, "x-envoy-attempt-count")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let parsed = parse_failover(&list).map(|(tokens, keys)| {
            // After a context-length error, the list an earlier attempt shortened.
            current_list(host, &self.plan, &keys, number).unwrap_or((tokens, keys))
        });
        let chosen = parsed.and_then(|(tokens, keys)| {
            // Envoy stops after as many attempts as there are keys; past that, stay on the last.
            let index = usize::try_from(number - 1).unwrap_or(usize::MAX);
            let key = keys.get(index).or(keys.last())?.clone();
            let previous = index
                .checked_sub(1)
                .and_then(|i| keys.get(i).or(keys.last()))
                .cloned();
            let index = index.min(keys.len().saturating_sub(1));
            self.plan.targets.contains_key(&key).then_some(Attempt {
                number,
                key,
                tokens,
                previous,
                keys,
                index,
                mixed: None,
                translate: None,
            })
        });
        let Some(attempt) = chosen else {
            log::error!(
                "llm-router: failover attempt names a target this filter does not know: {list:?}; \
                 configure the request and upstream filters with the same plugin configuration"
            );
            return self.reply(
                host,
                &ApiError::internal("The failover attempt names an unknown target."),
            );
        };
        let mut attempt = attempt;
        if let Some(endpoint) = self.endpoint {
            (attempt.mixed, attempt.translate) = formats(&self.plan, endpoint, &attempt);
        }
        // Attempt 1 was rewritten by the request filter, unless it is translated here.
        let first = attempt.number == 1 && attempt.translate.is_none();
        self.attempt = Some(attempt);
        if first {
            return self.send(host, None);
        }
        if end_of_stream {
            return self.send(host, None);
        }
        Flow::Pause
    }

    fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if self.replied {
            return Flow::Pause;
        }
        if self.attempt.is_none() || self.sent {
            return Flow::Continue;
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.send(host, Some(body_size))
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        let Some(attempt) = &self.attempt else {
            return Flow::Continue;
        };
        let now = now_ms(host);
        let headers = host.response_headers().unwrap_or_default();
        let flags = header_value(&headers, HEADER_HOP_FLAGS).map_or(0, response_flags_from_names);
        // The hop's flags are read; who served is marked for the request filter (one write).
        let mut edits = HeaderEdits::default();
        edits.set(HEADER_HOP_FLAGS, None);
        edits.set(HEADER_SERVED, Some(&served(attempt.number, &attempt.key)));
        if let Err(e) = edits.apply(host, Side::Response, Some(&headers)) {
            log::warn!("llm-router: could not mark the attempt's answer: {e}");
        }
        // The request filter, downstream, edits what the client gets; this one only reads.
        self.acc
            .on_response_map(host, &self.plan, &headers, flags, false, now);
        // A 400 is held for its body only while a larger context window is left to try.
        let small = header_value(&headers, "content-length")
            .is_none_or(|n| n.trim().parse::<usize>().is_ok_and(|n| n <= MAX_ERROR_BODY));
        let status = header_value(&headers, ":status");
        if self.context_retry && status == Some("400") && small && !end_of_stream {
            let attempt = self.attempt.as_ref();
            self.held = attempt
                .and_then(|a| after_context_error(&self.plan, &a.keys, a.index))
                .map(|(keys, skipped)| Held { keys, skipped });
        }
        if self.held.is_some() {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if self.held.is_some() {
            if !end_of_stream && body_size <= MAX_ERROR_BODY {
                return Flow::Pause;
            }
            return self.release(host, body_size, end_of_stream);
        }
        let _ = self.acc.on_response_body(host, body_size, end_of_stream);
        Flow::Continue
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        if self.held.is_some() {
            // The held body ends here: all of it.
            return self.release(host, usize::MAX, true);
        }
        // Every chunk was read as it passed; the body ends here.
        let _ = self.acc.on_response_body(host, 0, true);
        Flow::Continue
    }

    /// The end of the attempt (a failed one ends when the router retries).
    fn on_log(&mut self, host: &mut dyn Host) {
        if self.acc.is_open() {
            let end = StreamEnd::read(host, self.acc.completed());
            self.acc.finish(host, &self.plan, &end);
        }
    }
}

/// The client's API when the candidates mix APIs, and the formats of `attempt`'s
/// translation, if it is translated (`endpoint`: the client's).
fn formats(
    plan: &Plan,
    endpoint: Endpoint,
    attempt: &Attempt,
) -> (Option<Format>, Option<(Format, Format)>) {
    let needs = |key: &str| {
        let upstream = plan
            .targets
            .get(key)
            .and_then(|t| plan.upstream(t.upstream))?;
        translation::needed(endpoint, upstream).ok().flatten()
    };
    let mixed = attempt
        .keys
        .iter()
        .find_map(|k| needs(k))
        .map(|(from, _)| from);
    (mixed, mixed.and(needs(&attempt.key)))
}

/// Rewrites an attempt for its target (`to`): its model in the body (or the whole body
/// translated into the target's API) and every header that names the target, from the
/// client's path and host kept by the request filter.
fn rewrite_attempt(
    host: &mut dyn Host,
    plan: &Plan,
    client: &mut ClientHeaders,
    to: (&TargetRef, &Upstream),
    attempt: &Attempt,
    body_size: Option<usize>,
) -> Result<(), ApiError> {
    let (target, upstream) = to;
    let path = match attempt.translate {
        Some((_, to)) => Some(translation::path(to).to_owned()),
        None => client.get(host, HEADER_PATH),
    };
    let authority = client.get(host, HEADER_AUTHORITY);
    let mut edits = HeaderEdits::default();
    let mut new_body = None;
    if let Some(size) = body_size {
        let body = host
            .request_body(size)
            .map_err(|e| ApiError::internal(format!("could not read the body: {e}")))?
            .unwrap_or_default();
        let edited = match attempt.translate {
            Some((from, to)) => {
                let value: Value = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::internal(format!("could not read the body to translate: {e}"))
                })?;
                let max = upstream.default_max_tokens;
                translation::body(&value, from, to, &target.model, max)?
            }
            None => {
                let model = json_string(&target.model);
                edit_object(&body, &[("model", &model)], &[]).map_err(|e| {
                    ApiError::internal(format!("could not rewrite the body: {}", e.0))
                })?
            }
        };
        if client.has("content-length") {
            edits.set("content-length", Some(&edited.len().to_string()));
        }
        new_body = Some((size, edited));
    }
    rewrite_for_upstream(
        &mut edits,
        plan,
        upstream,
        path.as_deref(),
        authority.as_deref(),
        true,
    );
    if let Some(client_format) = attempt.mixed {
        let to = attempt.translate.map(|(_, to)| to);
        translation::attempt_header_edits(&mut edits, upstream, client_format, to);
    }
    client.apply(host, &edits)?;
    if let Some((size, body)) = new_body {
        replace_body(host, size, &body)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
