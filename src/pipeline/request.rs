//! One HTTP request through the router: pause the headers, buffer the JSON body, classify,
//! route, rewrite headers and body, let it go; then stamp the diagnostic response headers.
//!
//! Health (when `health.enabled`): routing reads each candidate's state from the shared
//! health board; the chosen target is admitted on the board (in flight + 1, budget charged
//! with the prompt estimate, half-open probe claimed by compare-and-swap); the response
//! headers give the verdict (status, rate-limit headers, which cool the target down at
//! once); `on_log`, at the end of the stream, finishes the request exactly once (latency,
//! in flight - 1, outcome), including streams the client abandoned or the upstream reset.
//! A failing shared-data call never fails the request: it is logged and the request is
//! routed without health.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::classify::Classification;
use crate::config::plan::{is_header_value_safe, Plan};
use crate::config::raw::WhenAllUnhealthy;
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::health::{
    retry_headers, soonest, Admission, Availability, Budget, HealthBoard, Outcome,
};
use crate::host::{shared_increment, Host};
use crate::rewrite::body::{edit_object, json_string};
use crate::route::prefs::ROUTER_FIELDS;
use crate::route::{route, Chooser, ClientPrefs, Decision, RouteError, RouteRequest, TargetStatus};

/// What the host should do next with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Client credentials that must never reach a provider.
const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

pub const HEADER_UPSTREAM: &str = "x-llm-router-upstream";
pub const HEADER_MODEL: &str = "x-llm-router-model";
pub const HEADER_TASK: &str = "x-llm-router-task";
pub const HEADER_COMPLEXITY: &str = "x-llm-router-complexity";
pub const HEADER_RULE: &str = "x-llm-router-rule";
pub const HEADER_TAGS: &str = "x-llm-router-tags";

/// Longest client-given model name echoed in `x-llm-router-model`.
pub const MAX_ECHOED_MODEL_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Not ours (other path or method): untouched.
    Passthrough,
    /// Waiting for the whole body.
    Buffering(Endpoint),
    /// Rewritten and sent on.
    Routed,
    /// We answered the client ourselves.
    Replied,
}

/// What the response headers report about the routing decision.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    upstream: String,
    model: Option<String>,
    task: &'static str,
    complexity: &'static str,
    rule: String,
    tags: String,
}

/// Envoy's response flags (the `response.flags` attribute, a bit vector).
pub mod response_flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    /// Any of these: the target could not be reached or dropped the stream.
    pub const CONNECT_FAILURE: u64 = NO_HEALTHY_UPSTREAM
        | UPSTREAM_REMOTE_RESET
        | UPSTREAM_CONNECTION_FAILURE
        | UPSTREAM_CONNECTION_TERMINATION
        | UPSTREAM_OVERFLOW;
    pub const TIMEOUT: u64 = UPSTREAM_REQUEST_TIMEOUT | STREAM_IDLE_TIMEOUT;
}

/// A request admitted to a target on the health board, until it is finished (exactly once).
#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    key: String,
    /// This request is the target's half-open probe.
    probe: bool,
    start_ms: u64,
    /// Set by the response headers.
    ttfb_ms: Option<u64>,
    status: Option<u32>,
    /// Rate-limit "come back at" from the response headers.
    until_ms: Option<u64>,
    /// Tokens charged at admission (the prompt estimate).
    charged: u64,
    /// The target has a tokens-per-minute budget: read `usage` from the response.
    count_usage: bool,
    /// The last bytes of the response body seen so far (at most [`USAGE_TAIL_BYTES`]).
    tail: Vec<u8>,
    /// Tokens the response reported in `usage`.
    usage: Option<u64>,
}

/// How much of the end of a response body is kept to find its `usage`.
pub const USAGE_TAIL_BYTES: usize = 4096;

pub struct RequestFlow {
    plan: Rc<Plan>,
    state: State,
    report: Option<Report>,
    /// Seed for `weighted` choices; mixed with the clock per request.
    seed: u64,
    board: HealthBoard,
    tracked: Option<Tracked>,
    /// Set when health could not be read or written for this request (it was routed
    /// without it).
    health_degraded: bool,
}

impl RequestFlow {
    pub fn new(plan: Rc<Plan>, seed: u64) -> RequestFlow {
        RequestFlow {
            plan,
            state: State::Start,
            report: None,
            seed,
            board: HealthBoard::default(),
            tracked: None,
            health_degraded: false,
        }
    }

    /// Whether this request is counted on the health board and not yet finished.
    pub fn is_tracked(&self) -> bool {
        self.tracked.is_some()
    }

    /// Whether this request was admitted as a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.tracked.as_ref().is_some_and(|t| t.probe)
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        // A client must never pick the Envoy cluster itself.
        let _ = host.set_request_header(&self.plan.cluster_header, None);
        let method = host.request_header(":method").ok().flatten();
        let path = host.request_header(":path").ok().flatten();
        let endpoint = match (method.as_deref(), path.as_deref()) {
            (Some("POST"), Some(path)) => Endpoint::from_path(path),
            _ => None,
        };
        let Some(endpoint) = endpoint else {
            self.state = State::Passthrough;
            return Flow::Continue;
        };
        if end_of_stream {
            return self.reply(host, &missing_body());
        }
        if let Ok(Some(encoding)) = host.request_header("content-encoding") {
            if !encoding.trim().eq_ignore_ascii_case("identity") {
                return self.reply(
                    host,
                    &ApiError {
                        status: 415,
                        message: "Compressed request bodies are not supported; send plain JSON."
                            .to_owned(),
                        kind: "invalid_request_error",
                        param: None,
                        code: "unsupported_content_encoding",
                    },
                );
            }
        }
        let declared = host
            .request_header("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.plan.max_body_bytes) {
            return self.reply(host, &ApiError::body_too_large(self.plan.max_body_bytes));
        }
        self.state = State::Buffering(endpoint);
        Flow::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let State::Buffering(endpoint) = self.state else {
            return if self.state == State::Replied {
                Flow::Pause
            } else {
                Flow::Continue
            };
        };
        if body_size > self.plan.max_body_bytes {
            return self.reply(host, &ApiError::body_too_large(self.plan.max_body_bytes));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        match self.route_request(host, endpoint, body_size) {
            Ok(report) => {
                self.report = Some(report);
                self.state = State::Routed;
                Flow::Continue
            }
            Err(Refusal::Api(e)) => self.reply(host, &e),
            Err(Refusal::AllUnavailable { until_ms }) => {
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
                self.reply_with(host, &e, Some(&secs.to_string()))
            }
        }
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Flow {
        if self.state != State::Routed {
            return Flow::Continue;
        }
        self.observe_response(host);
        if !self.plan.response_headers {
            return Flow::Continue;
        }
        if let Some(r) = &self.report {
            let _ = host.set_response_header(HEADER_UPSTREAM, Some(&r.upstream));
            // `None` also removes a value the upstream sent: diagnostics are the router's own.
            let _ = host.set_response_header(HEADER_MODEL, r.model.as_deref());
            let _ = host.set_response_header(HEADER_TASK, Some(r.task));
            let _ = host.set_response_header(HEADER_COMPLEXITY, Some(r.complexity));
            let _ = host.set_response_header(HEADER_RULE, Some(&r.rule));
            let tags = Some(r.tags.as_str()).filter(|t| !t.is_empty());
            let _ = host.set_response_header(HEADER_TAGS, tags);
        }
        Flow::Continue
    }

    /// A response body chunk passes (never held): when the target has a tokens-per-minute
    /// budget, the end of the body is kept to read the tokens its `usage` reports.
    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let Some(t) = self.tracked.as_mut().filter(|t| t.count_usage) else {
            return Flow::Continue;
        };
        let take = body_size.min(USAGE_TAIL_BYTES);
        let skip = body_size - take;
        if let Ok(Some(chunk)) = host.response_body(body_size) {
            let chunk = chunk.get(skip..).unwrap_or(&chunk);
            t.tail.extend_from_slice(chunk);
            let excess = t.tail.len().saturating_sub(USAGE_TAIL_BYTES);
            t.tail.drain(..excess);
        }
        if end_of_stream {
            t.usage = usage_tokens(&t.tail);
            t.tail = Vec::new();
        }
        Flow::Continue
    }

    /// The end of the stream (Envoy's access-log callback): finishes the tracked request,
    /// once, with what the response said, or, when no response came, with what Envoy's
    /// response flags say (connection failure, reset, timeout) or as cancelled.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        let Some(t) = self.tracked.take() else {
            return;
        };
        let now = now_ms(host);
        let flags = int_property(host, &["response", "flags"]).unwrap_or(0);
        let status = t.status.or_else(|| {
            int_property(host, &["response", "code"])
                .filter(|c| *c > 0)
                .and_then(|c| u32::try_from(c).ok())
        });
        let mut outcome = outcome_of(
            status,
            t.until_ms,
            flags,
            now.saturating_sub(t.start_ms),
            t.ttfb_ms,
        );
        if let (Outcome::Success { tokens, .. }, Some(usage)) = (&mut outcome, t.usage) {
            *tokens = usage.saturating_sub(t.charged);
        }
        self.finish(host, &t, outcome, now);
    }

    fn finish(&self, host: &mut dyn Host, t: &Tracked, outcome: Outcome, now: u64) {
        let policy = &self.plan.health.policy;
        if let Err(e) = self
            .board
            .update(host, &t.key, |h| h.on_finish(outcome, t.probe, now, policy))
        {
            log::warn!(
                "llm-router: could not record the outcome for {}: {e}",
                t.key
            );
        }
    }

    /// Reads the verdict of the response headers; a rate-limit cooldown applies at once.
    fn observe_response(&mut self, host: &mut dyn Host) {
        let board = self.board;
        let plan = Rc::clone(&self.plan);
        let Some(t) = self.tracked.as_mut() else {
            return;
        };
        if t.status.is_some() {
            return;
        }
        let now = now_ms(host);
        // One host call for all of them: the rate-limit checks look at up to eight headers.
        let headers = host.response_headers().unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let status = header(":status")
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let policy = &plan.health.policy;
        let until =
            retry_headers::cooldown_until(status, &header, now, policy.max_rate_limit_cooldown_ms);
        t.status = Some(status);
        t.ttfb_ms = Some(now.saturating_sub(t.start_ms));
        t.until_ms = until;
        if let Some(until) = until {
            let key = t.key.clone();
            if let Err(e) = board.update(host, &key, |h| h.rate_limited_until(until, now, policy)) {
                log::warn!("llm-router: could not record the rate limit of {key}: {e}");
            }
        }
    }

    fn reply(&mut self, host: &mut dyn Host, error: &ApiError) -> Flow {
        self.reply_with(host, error, None)
    }

    fn reply_with(
        &mut self,
        host: &mut dyn Host,
        error: &ApiError,
        retry_after: Option<&str>,
    ) -> Flow {
        self.state = State::Replied;
        // Admitted but never sent upstream: not held against the target.
        if let Some(t) = self.tracked.take() {
            let now = now_ms(host);
            self.finish(host, &t, Outcome::Cancelled, now);
        }
        let body = error.body();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(secs) = retry_after {
            headers.push(("retry-after", secs));
        }
        if let Err(e) = host.send_local_reply(error.status, &headers, &body) {
            log::error!("could not send the {} reply: {e}", error.status);
        }
        Flow::Pause
    }

    /// Admits the request on the health board: the first usable candidate whose admission
    /// wins (another worker may have claimed its probe or spent its budget meanwhile), else,
    /// by `when_all_unhealthy`, the one that recovers soonest or a refusal. Returns the index
    /// of the chosen candidate. Without health, or when the board cannot be used, the first
    /// candidate, untracked.
    fn admit(
        &mut self,
        host: &mut dyn Host,
        decision: &Decision,
        tokens: u64,
        now: u64,
    ) -> Result<usize, Refusal> {
        let plan = Rc::clone(&self.plan);
        if !plan.health.enabled || self.health_degraded {
            return Ok(0);
        }
        let policy = &plan.health.policy;
        let track = |key: &str, probe: bool, budget: &Budget| Tracked {
            key: key.to_owned(),
            probe,
            start_ms: now,
            ttfb_ms: None,
            status: None,
            until_ms: None,
            charged: tokens,
            count_usage: budget.tpm.is_some(),
            tail: Vec::new(),
            usage: None,
        };
        let mut unavailable: Vec<(usize, Availability)> = Vec::new();
        for (i, c) in decision.candidates.iter().enumerate() {
            if !c.availability.is_usable() {
                unavailable.push((i, c.availability));
                continue;
            }
            match self
                .board
                .update(host, &c.key, |h| h.admit(now, policy, &c.budget, tokens))
            {
                Ok((_, Admission::Admitted { probe })) => {
                    self.tracked = Some(track(&c.key, probe, &c.budget));
                    return Ok(i);
                }
                Ok((_, Admission::Refused { until_ms, reason })) => {
                    unavailable.push((i, Availability::Unavailable { until_ms, reason }));
                }
                Err(e) => {
                    log::warn!("llm-router: routing without health: {e}");
                    self.health_degraded = true;
                    return Ok(i);
                }
            }
        }
        let Some((i, availability)) = soonest(unavailable) else {
            return Ok(0);
        };
        if plan.health.when_all_unhealthy == WhenAllUnhealthy::Reject {
            return Err(Refusal::AllUnavailable {
                until_ms: availability.ready_at(),
            });
        }
        let Some(c) = decision.candidates.get(i) else {
            return Ok(0);
        };
        // Every candidate is unavailable: the soonest back takes it (as the probe if its
        // cooldown is over by now).
        match self.board.update(host, &c.key, |h| {
            let probe = h.try_claim_probe(now, policy, &c.budget);
            h.on_start(now, tokens);
            probe
        }) {
            Ok((_, probe)) => self.tracked = Some(track(&c.key, probe, &c.budget)),
            Err(e) => {
                log::warn!("llm-router: routing without health: {e}");
                self.health_degraded = true;
            }
        }
        Ok(i)
    }

    fn route_request(
        &mut self,
        host: &mut dyn Host,
        endpoint: Endpoint,
        body_size: usize,
    ) -> Result<Report, Refusal> {
        let plan = Rc::clone(&self.plan);
        let body = host
            .request_body(body_size)
            .map_err(|e| ApiError::internal(format!("could not read the request body: {e}")))?
            .unwrap_or_default();
        if body.is_empty() {
            // E.g. HTTP/2 headers without END_STREAM followed by an empty final DATA frame.
            return Err(missing_body().into());
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid_request(
                format!("Request body is not valid JSON: {e}."),
                None,
                "invalid_json",
            )
        })?;
        let Value::Object(fields) = &value else {
            return Err(ApiError::invalid_request(
                "Request body must be a JSON object.",
                None,
                "invalid_body",
            )
            .into());
        };
        let requested = requested_model(fields)?;
        let prefs = ClientPrefs::from_body(fields)?;
        let classification = plan.classifier.classify(&value, endpoint);
        let max_output_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(Value::as_u64));

        // Rules may look at request headers; read the ones they name, once.
        let mut header_values: Vec<(String, Option<String>)> = Vec::new();
        for rule in &plan.rules {
            for h in &rule.matcher.headers {
                if !header_values.iter().any(|(n, _)| *n == h.name) {
                    let v = host.request_header(&h.name).ok().flatten();
                    header_values.push((h.name.clone(), v));
                }
            }
        }
        let header = |name: &str| {
            header_values
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
        };
        let request = RouteRequest {
            endpoint,
            model: requested,
            classification: &classification,
            header: &header,
            prefs: &prefs,
            max_output_tokens,
        };
        let now = now_ms(host);
        let mut chooser = HostChooser {
            host: &mut *host,
            rng: self.seed,
            health: plan.health.enabled.then_some(HealthRead {
                board: self.board,
                plan: &plan,
                now_ms: now,
            }),
            degraded: false,
        };
        let routed = route(&plan, &request, &mut chooser);
        self.health_degraded |= chooser.degraded;
        let decision = routed.map_err(|e| match e {
            RouteError::UnknownModel(m) => Refusal::Api(ApiError::model_not_found(&m)),
            RouteError::NoCandidate(reason) => Refusal::Api(ApiError::no_candidate(reason)),
            RouteError::AllUnavailable { until_ms } => Refusal::AllUnavailable { until_ms },
        })?;
        let index = self.admit(host, &decision, classification.estimated_prompt_tokens, now)?;
        let chosen = decision.candidates.get(index).ok_or_else(|| {
            Refusal::Api(ApiError::no_candidate(
                "No target is available for this request.",
            ))
        })?;
        let upstream = plan
            .upstream(chosen.upstream)
            .ok_or_else(|| ApiError::internal("routing chose an unknown upstream"))?;

        // Body: only the changed members are replaced; everything else is the client's bytes.
        let remove: Vec<&str> = ROUTER_FIELDS
            .iter()
            .copied()
            .filter(|k| fields.contains_key(*k))
            .collect();
        let model_unchanged = fields.get("model").and_then(Value::as_str) == Some(&chosen.model);
        let new_body =
            if model_unchanged && remove.is_empty() {
                None
            } else {
                let model_json = json_string(&chosen.model);
                let set: &[(&str, &str)] = if model_unchanged {
                    &[]
                } else {
                    &[("model", &model_json)]
                };
                Some(edit_object(&body, set, &remove).map_err(|e| {
                    ApiError::internal(format!("could not rewrite the body: {}", e.0))
                })?)
            };

        // Headers: route to the chosen cluster, swap the client's credential for the provider's.
        let set = |host: &mut dyn Host, name: &str, value: Option<&str>| {
            host.set_request_header(name, value)
                .map_err(|e| ApiError::internal(format!("could not set header {name}: {e}")))
        };
        set(host, &plan.cluster_header, Some(&upstream.cluster))?;
        for name in CLIENT_CREDENTIAL_HEADERS {
            set(host, name, None)?;
        }
        if let Some(auth) = &upstream.auth {
            set(host, auth.header, Some(&auth.value))?;
        }
        for (name, value) in &upstream.headers {
            set(host, name, Some(value))?;
        }
        if let Some(authority) = &upstream.authority {
            set(host, ":authority", Some(authority))?;
        }
        if upstream.path_prefix != "/v1" {
            if let Ok(Some(path)) = host.request_header(":path") {
                let rest = path.strip_prefix("/v1").unwrap_or(&path);
                let new_path = format!("{}{rest}", upstream.path_prefix);
                set(host, ":path", Some(&new_path))?;
            }
        }
        if let Some(new_body) = &new_body {
            if host
                .request_header("content-length")
                .ok()
                .flatten()
                .is_some()
            {
                set(host, "content-length", Some(&new_body.len().to_string()))?;
            }
            host.replace_request_body(body_size, new_body)
                .map_err(|e| ApiError::internal(format!("could not replace the body: {e}")))?;
        }

        Ok(report(
            &decision.source,
            &upstream.name,
            &chosen.model,
            &classification,
        ))
    }
}

/// Why a request is answered by the router itself.
enum Refusal {
    Api(ApiError),
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

fn now_ms(host: &dyn Host) -> u64 {
    host.now_nanos() / 1_000_000
}

/// An integer property as Envoy encodes it (8 bytes little endian).
fn int_property(host: &dyn Host, path: &[&str]) -> Option<u64> {
    let bytes = host.property(path).ok().flatten()?;
    let arr = <[u8; 8]>::try_from(bytes.as_slice()).ok()?;
    Some(u64::from_le_bytes(arr))
}

/// How a tracked request ended, from the response status (if any came), the rate-limit time
/// read from its headers and Envoy's response flags at the end of the stream.
fn outcome_of(
    status: Option<u32>,
    until_ms: Option<u64>,
    flags: u64,
    latency_ms: u64,
    ttfb_ms: Option<u64>,
) -> Outcome {
    if flags & response_flags::TIMEOUT != 0 {
        return Outcome::Timeout;
    }
    if flags & response_flags::CONNECT_FAILURE != 0 {
        return Outcome::ConnectFailure;
    }
    match status {
        None | Some(0) => Outcome::Cancelled,
        Some(429) => Outcome::RateLimited { until_ms },
        Some(500..=599) => Outcome::Status5xx,
        // 2xx and 3xx, and 4xx other than 429: the target answered (a 4xx is the client's
        // fault, not the target's).
        Some(_) => Outcome::Success {
            latency_ms,
            ttfb_ms,
            tokens: 0,
        },
    }
}

/// Tokens reported by the last `usage` object in `tail` (the end of a response body, JSON or
/// server-sent events): `total_tokens`, else prompt + completion (OpenAI chat and
/// completions), else input + output (OpenAI responses, Anthropic). `None` when there is no
/// `usage` with numbers. A lenient scan, not a JSON parse: the tail may start mid-document.
pub fn usage_tokens(tail: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"usage\"";
    let at = tail.windows(KEY.len()).rposition(|w| w == KEY)?;
    let rest = tail.get(at + KEY.len()..)?;
    // The object after `"usage":`, up to its closing brace (usage objects hold at most one
    // level of nested objects, e.g. `prompt_tokens_details`).
    let open = rest.iter().position(|b| *b == b'{')?;
    let mut depth = 0usize;
    let mut end = rest.len();
    for (i, b) in rest.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let object = rest.get(open..end)?;
    let number = |name: &str| -> Option<u64> {
        let key = format!("\"{name}\"");
        let key = key.as_bytes();
        let at = object.windows(key.len()).position(|w| w == key)?;
        let after = object.get(at + key.len()..)?;
        let digits: Vec<u8> = after
            .iter()
            .skip_while(|b| b.is_ascii_whitespace() || **b == b':')
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    };
    if let Some(total) = number("total_tokens") {
        return Some(total);
    }
    let pair = |a: &str, b: &str| match (number(a), number(b)) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0).saturating_add(y.unwrap_or(0))),
    };
    pair("prompt_tokens", "completion_tokens").or_else(|| pair("input_tokens", "output_tokens"))
}

fn missing_body() -> ApiError {
    ApiError::invalid_request(
        "Request body is required: send a JSON object.",
        None,
        "missing_body",
    )
}

fn report(source: &str, upstream: &str, model: &str, c: &Classification) -> Report {
    Report {
        upstream: upstream.to_owned(),
        // A passthrough model comes from the client: it only reaches a header if it is safe
        // and short (an oversized header block would break the client's HTTP/2 stream).
        model: (model.len() <= MAX_ECHOED_MODEL_BYTES && is_header_value_safe(model))
            .then(|| model.to_owned()),
        task: task_name(c),
        complexity: complexity_name(c),
        rule: source.to_owned(),
        tags: c.tags.join(","),
    }
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

/// `None` means the router chooses (`"auto"`, `null` or no `model`).
fn requested_model(fields: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    match fields.get("model") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::invalid_request(
            "`model` must not be empty.",
            Some("model"),
            "invalid_value",
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_request(
            "`model` must be a string.",
            Some("model"),
            "invalid_type",
        )),
    }
}

/// What the chooser needs to read health from the board.
struct HealthRead<'p> {
    board: HealthBoard,
    plan: &'p Plan,
    now_ms: u64,
}

/// Randomness from a per-request seed; round-robin turns from shared data so that all
/// workers take turns together (a local counter if shared data fails); target health from
/// the shared health board.
struct HostChooser<'h, 'p> {
    host: &'h mut dyn Host,
    rng: u64,
    health: Option<HealthRead<'p>>,
    /// A health read failed.
    degraded: bool,
}

impl Chooser for HostChooser<'_, '_> {
    fn health(&mut self, key: &str, budget: &Budget) -> Option<TargetStatus> {
        let read = self.health.as_ref()?;
        match read.board.read(&*self.host, key) {
            Ok(h) => Some(TargetStatus {
                availability: h.availability(read.now_ms, &read.plan.health.policy, budget),
                in_flight: h.in_flight,
                latency_ms: h.latency_ms(),
            }),
            Err(e) => {
                self.degraded = true;
                log::debug!("llm-router: routing without health: {e}");
                None
            }
        }
    }

    fn random(&mut self) -> u64 {
        // splitmix64: good spread from any seed, including small ones.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_turn(&mut self, key: &str) -> u64 {
        let shared_key = format!("llm_router.rr.{key}");
        match shared_increment(self.host, &shared_key) {
            Some(turn) => turn,
            None => self.random(),
        }
    }
}
