//! One HTTP request through the router: pause the headers, buffer the JSON body, classify,
//! route, rewrite headers and body, let it go; then stamp the diagnostic response headers.
//! This module keeps the request's state and calls the stages in order, each a module of
//! its own that takes and gives plain values:
//!
//! - request headers: identify the caller (`identify.rs`), answer `GET /v1/models`
//!   (`answer.rs`), let other paths pass, check the headers of the body (`parse.rs`) and
//!   pause for it;
//! - the whole body (`route_request`): parse it (`parse.rs`), classify it
//!   (`crate::classify`), route it (`routing.rs`), admit a target and the caller
//!   (`admit.rs`), rewrite headers and body for the upstream (`rewrite.rs`), let it go
//!   (`outbound.rs`); with `rate_limit_service` the caller and the target are admitted at
//!   the service instead (`service_admit.rs`), the request paused until it answers;
//! - response headers and body (`inbound.rs`): the answer (`answer.rs`: diagnostics, the
//!   caller's rate limits, who served after failover, the cost once a held body is whole),
//!   translated back into the client's API (`translation.rs`), with the usage read as the
//!   body passes (`track.rs`);
//! - `on_log` (`inbound.rs`): the caller's ledger settled (`admit.rs`) or its usage
//!   reported to the rate-limit service (`service_admit.rs`), and the access-log line
//!   published (`record.rs`).
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

use crate::audit::RequestRecord;
use crate::clients::stats::ClientStat;
use crate::clients::{AuthError, Client, Quota};
use crate::config::plan::{Plan, Price};
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::health::deferred::Deferred;
use crate::health::HealthBoard;
use crate::host::Host;
use crate::metrics::Metrics;
use crate::models::ModelsCatalog;
use crate::path::{self, PathKind};
use crate::pipeline::admit::{self, HealthAdmission};
use crate::pipeline::answer::{self, HeldBody, Refusal, Report, HEADER_COST};
use crate::pipeline::identify::{self, Caller, ClientHeaders};
use crate::pipeline::parse::{self, ParsedRequest};
use crate::pipeline::record;
use crate::pipeline::rewrite::{self, Destination};
use crate::pipeline::routing::{self, RuleHeaders, Sources};
use crate::pipeline::service_admit::{self, Charged, Waiting};
use crate::pipeline::track::{is_event_stream, now_ms, Accounting, StreamEnd};
use crate::pipeline::translation::{self, MixedFailover, Translation};
use crate::pipeline::StreamFlow;
use crate::ratelimit::{Check, Verdict};
use crate::rewrite::headers::{HeaderEdits, Side};
use crate::route::RouteRequest;
use crate::route::{Candidate, Decision};
use crate::usage::Edit;

mod inbound;
mod outbound;

use outbound::Outbound;

/// What the host should do next with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Not ours (other path or method): untouched.
    Passthrough,
    /// Waiting for the whole body.
    Buffering(Endpoint),
    /// Routed, waiting for the rate-limit service's answers.
    Admitting,
    /// Rewritten and sent on.
    Routed,
    /// We answered the client ourselves.
    Replied,
}

pub struct RequestFlow {
    plan: Rc<Plan>,
    state: State,
    report: Option<Report>,
    /// Seed for `weighted` choices, distinct per request (see `wasm.rs`).
    seed: u64,
    board: HealthBoard,
    /// Health board, stats and `usage` of the request.
    acc: Accounting,
    /// Set when health could not be read or written for this request (it was routed
    /// without it).
    health_degraded: bool,
    metrics: Option<Rc<Metrics>>,
    /// The client's headers as they arrived.
    client: ClientHeaders,
    /// The access-log record, for requests the router handles (when `access_log` is on).
    record: Option<RequestRecord>,
    /// When the router had the request (its body read whole, or the headers it answered at):
    /// the clock the body callback reads anyway, so the headers read none.
    start_ms: Option<u64>,
    /// The router asked the stream for its usage and the client did not: the usage-only
    /// chunk is removed from the response.
    strip_usage: bool,
    /// The response headers wait for the end of the body (for `x-llm-router-cost`).
    holding: bool,
    /// While holding: what Envoy holds of the body.
    held: HeldBody,
    /// The configured client that sent the request (index in `clients`), once identified.
    caller: Option<usize>,
    /// The caller's per-minute limits after its admission: `x-ratelimit-*` of the response.
    quota: Option<Quota>,
    /// Tokens charged to the caller's ledger at admission; `Some` while its end is owed.
    ledger_charged: Option<u64>,
    /// The canonical path of a routed endpoint (with the query string), as sent upstream.
    path: Option<String>,
    /// While admitting at the rate-limit service: its calls, and the request ready to go.
    waiting: Option<(Waiting, Outbound)>,
    /// What admission charged at the rate-limit service; `Some` while the report is owed.
    service_charged: Option<Charged>,
    /// The answer goes back into the client's API (its target speaks another).
    translation: Option<Translation>,
    /// With failover across APIs: how a translated attempt's answer goes back.
    mixed_failover: Option<MixedFailover>,
    /// The client speaks Anthropic's API (`/v1/messages`): the router's errors take its shape.
    anthropic_client: bool,
}

impl RequestFlow {
    pub fn new(plan: Rc<Plan>, seed: u64) -> RequestFlow {
        RequestFlow {
            plan,
            state: State::Start,
            report: None,
            seed,
            board: HealthBoard::default(),
            acc: Accounting::default(),
            health_degraded: false,
            metrics: None,
            client: ClientHeaders::default(),
            record: None,
            start_ms: None,
            strip_usage: false,
            holding: false,
            held: HeldBody::default(),
            caller: None,
            quota: None,
            ledger_charged: None,
            path: None,
            waiting: None,
            service_charged: None,
            translation: None,
            mixed_failover: None,
            anthropic_client: false,
        }
    }

    /// Counts the request in Envoy stats.
    pub fn with_metrics(mut self, metrics: Rc<Metrics>) -> RequestFlow {
        self.acc = Accounting::new(Some(Rc::clone(&metrics)));
        self.acc.tracker.set_board(self.board.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Successful finishes wait in this worker's `deferred` for its next write to the
    /// target's health (see `health::deferred`).
    pub fn with_deferred_health(mut self, deferred: Rc<Deferred>) -> RequestFlow {
        self.board = HealthBoard::default().with_deferred(deferred);
        self.acc.tracker.set_board(self.board.clone());
        self
    }

    /// Whether this request is counted on the health board and not yet finished.
    pub fn is_tracked(&self) -> bool {
        self.acc.tracker.is_tracked()
    }

    /// Whether this request was admitted as a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.acc.tracker.is_probe()
    }

    fn reply(&mut self, host: &mut dyn Host, error: &ApiError) -> Flow {
        self.reply_with(host, error, &[])
    }

    /// Answers with an error and `extra` headers (`retry-after`, ...).
    fn reply_with(
        &mut self,
        host: &mut dyn Host,
        error: &ApiError,
        extra: &[(&str, &str)],
    ) -> Flow {
        if let Some(r) = &mut self.record {
            r.error = Some(error.code);
        }
        // Admitted but never sent upstream: not held against the target.
        self.acc.cancel(host, &self.plan);
        // An Anthropic client gets Anthropic's error shape.
        let body = match self.anthropic_client {
            true => error.anthropic_body(),
            false => error.body(),
        };
        self.reply_raw(host, error.status, extra, &body)
    }

    /// The stages of a whole buffered body: parse, classify, route, admit, rewrite. Gives
    /// the request ready to send (and the rate-limit service's calls it waits for), or why
    /// the router answers itself.
    fn route_request(
        &mut self,
        host: &mut dyn Host,
        endpoint: Endpoint,
        body_size: usize,
    ) -> Result<Outbound, Refusal> {
        let plan = Rc::clone(&self.plan);
        // The one clock read of this callback: the request's start and the health clock.
        let now = now_ms(host);
        self.started(now);
        let caller = Caller::of(&plan, self.caller, self.metrics.as_deref());
        // Parse and classify.
        let body = parse::read_body(host, body_size)?;
        let value = parse::json(&body)?;
        let parsed = ParsedRequest::of(&value)?;
        record::requested(self.record.as_mut(), parsed.model, parsed.stream);
        let prefs = parsed.prefs()?;
        routing::check_allowed(caller.as_ref(), parsed.model)?;
        let classification = plan.classifier.classify(&value, endpoint);

        // Route. Rules may look at request headers; read the ones they name, once.
        let rule_headers = RuleHeaders::read(&plan, &self.client, host);
        let header = |name: &str| rule_headers.get(name);
        let request = RouteRequest {
            endpoint,
            model: parsed.model,
            classification: &classification,
            header: &header,
            prefs: &prefs,
            max_output_tokens: parsed.max_output_tokens,
            client: caller.as_ref().map(|c| c.client),
            format: parsed.format,
        };
        let sources = Sources {
            seed: self.seed,
            board: &self.board,
            metrics: self.metrics.as_deref(),
            now_ms: now,
        };
        let routed = routing::choose(host, &plan, &request, sources);
        self.health_degraded |= routed.degraded;
        let mut seen = routed.seen;
        let decision = routed
            .decision
            .map_err(|e| routing::refusal(e, caller.as_ref()))?;
        let estimate = classification.estimated_prompt_tokens;
        routing::count_budget_skips(host, self.metrics.as_deref(), &decision);

        // Admit. With failover, the first candidate is sent through the failover cluster
        // (not admitted here: the attempt filter tracks each attempt); otherwise the
        // candidate the health board admits goes straight to its cluster.
        let failover = match routing::failover_candidates(&plan, &decision) {
            Some((f, keys)) => {
                let (keys, mixed) = translation::fit_failover(&plan, endpoint, &value, keys)?;
                self.mixed_failover = mixed;
                Some((f, keys))
            }
            None => None,
        };
        let (chosen, index) = match &failover {
            Some((_, keys)) => (keys.first().copied(), 0),
            None => {
                let health = HealthAdmission {
                    board: &self.board,
                    tracker: &mut self.acc.tracker,
                    degraded: &mut self.health_degraded,
                };
                let index = health.admit(host, &plan, &decision, estimate, now, &mut seen)?;
                (decision.candidates.get(index), index)
            }
        };
        let chosen = chosen.ok_or_else(|| {
            Refusal::Api(ApiError::no_candidate(
                "No target is available for this request.",
            ))
        })?;
        // Last: only a request that would be sent counts against the client's limits (a
        // refusal here cancels the target's admission). With a rate-limit service, its calls
        // are made once the request is ready to go (`Outbound::checks`).
        let service = plan.rate_limit_service.as_ref();
        if let (Some(caller), None) = (&caller, service) {
            let admitted = admit::admit_caller(host, caller, estimate, now)?;
            self.quota = admitted.quota;
            self.ledger_charged = admitted.charged;
        }
        let upstream = plan
            .upstream(chosen.upstream)
            .ok_or_else(|| ApiError::internal("routing chose an unknown upstream"))?;

        // Rewrite: in place, or translated into the target's API (with failover, each
        // attempt is translated for its own target by the attempt filter).
        let translating = match failover {
            None => translation::needed(endpoint, upstream)?,
            Some(_) => None,
        };
        let (new_body, path) = match translating {
            Some((from, to)) => {
                let max = upstream.default_max_tokens;
                let b = translation::body(&value, from, to, &chosen.model, max)?;
                self.translation = Some(Translation::new(to, from, &value));
                (Some(b), Some(translation::path(to)))
            }
            None => {
                self.strip_usage =
                    rewrite::strips_usage(&plan, endpoint, parsed.fields, parsed.stream);
                let b = rewrite::body(&body, parsed.fields, &chosen.model, self.strip_usage)?;
                (b, self.path.as_deref())
            }
        };
        let to = Destination {
            upstream,
            path,
            failover: failover.as_ref().map(|(f, keys)| (*f, keys.as_slice())),
            estimate,
        };
        let mut edits = rewrite::header_edits(host, &plan, &self.client, &to, new_body.as_deref());
        if let Some(t) = &self.translation {
            translation::header_edits(&mut edits, upstream, t.upstream);
        }

        let mut r = Report::new(
            &decision.source,
            &upstream.name,
            &chosen.model,
            &classification,
        );
        r.failover = failover.is_some();
        r.target = chosen.key.clone();
        if let Some(record) = &mut self.record {
            record.decision = Some(record::decision(&r, &upstream.name, &chosen.model));
        }
        let checks = match service {
            Some(service) => {
                let client = self.caller();
                let (checks, charged) =
                    service_admit::admission(&plan, service, client, &chosen.key, estimate, now);
                self.service_charged = Some(charged);
                checks
            }
            None => Vec::new(),
        };
        Ok(Outbound {
            report: r,
            edits,
            new_body,
            body_size,
            passed_over: failover.is_none().then_some(index),
            chosen: chosen.clone(),
            decision,
            estimate,
            now,
            checks,
        })
    }
}

impl StreamFlow for RequestFlow {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        self.client = identify::read_client_headers(host, &self.plan);
        if let Err(e) = self.client.require_text(identify::read_headers(&self.plan)) {
            self.begin(host, "other");
            return self.reply(host, &e);
        }
        let method = self.client.get(host, ":method");
        let raw_path = self.client.get(host, ":path");
        let kind = raw_path.as_deref().map_or(PathKind::Other, path::classify);
        let (models_path, endpoint) = match (method.as_deref(), kind) {
            (Some("GET" | "HEAD"), PathKind::Models { canonical }) => (Some(canonical), None),
            (
                Some("POST"),
                PathKind::Endpoint {
                    endpoint,
                    canonical,
                },
            ) => {
                self.path = Some(canonical);
                (None, Some(endpoint))
            }
            (Some("GET" | "HEAD" | "POST"), PathKind::Unsafe) => {
                self.begin(host, "other");
                return self.reply(host, &ApiError::invalid_path());
            }
            _ => (None, None),
        };
        self.anthropic_client = endpoint == Some(Endpoint::AnthropicMessages);
        let models_path = models_path.as_deref();
        if self.plan.clients.is_some() {
            match identify::identify(&self.plan, &self.client, host) {
                Ok(caller) => self.caller = caller,
                Err(e) => return self.unauthorized(host, e, models_path, endpoint),
            }
        }
        let models =
            models_path.and_then(|p| answer::models(&self.plan, &self.client, self.caller(), p));
        if let Some(answer) = models {
            self.begin(host, "models");
            return self.reply_raw(host, answer.status, &[], &answer.body);
        }
        let Some(endpoint) = endpoint else {
            self.state = State::Passthrough;
            if self.plan.clients.is_some() {
                // The client's key is the router's, never a provider's.
                let _ = identify::strip_client_credentials(&self.plan, &mut self.client, host);
            }
            return Flow::Continue;
        };
        self.begin(host, endpoint.name());
        if end_of_stream {
            return self.reply(host, &parse::missing_body());
        }
        if let Err(e) = parse::check_headers(&self.plan, &self.client, host) {
            return self.reply(host, &e);
        }
        self.state = State::Buffering(endpoint);
        Flow::Pause
    }

    fn on_request_body(
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
        let out = match self.route_request(host, endpoint, body_size) {
            Ok(out) => out,
            Err(refusal) => return self.refuse(host, refusal),
        };
        let Some(service) = self.plan.rate_limit_service.as_ref() else {
            return self.go(host, out, false);
        };
        if out.checks.is_empty() {
            return self.go(host, out, false);
        }
        let waiting = service_admit::start(host, service, &out.checks, out.now);
        match waiting.verdict() {
            None => {
                self.state = State::Admitting;
                self.waiting = Some((waiting, out));
                Flow::Pause
            }
            Some(verdict) => {
                waiting.count(self.metrics.as_deref());
                self.admitted(host, &verdict, out, false)
            }
        }
    }

    /// An answer of the rate-limit service: once all are in, the request goes or is refused.
    fn on_grpc_response(&mut self, host: &mut dyn Host, token: u32, status: u32, size: usize) {
        self.service_answer(host, token, status, size);
    }

    /// A routed endpoint's body that ends in trailers: refused, since the body is never seen
    /// whole in a body callback (and LLM APIs have no request trailers). Passing it on would
    /// send it unrouted.
    fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        match self.state {
            State::Buffering(_) => self.reply(host, &ApiError::trailers_not_supported()),
            State::Replied => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        self.answer_headers(host, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.answer_body(host, body_size, end_of_stream)
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.answer_trailers(host)
    }

    /// The end of the stream (Envoy's access-log callback).
    fn on_log(&mut self, host: &mut dyn Host) {
        self.finish(host)
    }
}

impl RequestFlow {
    /// The configured client that sent the request.
    fn caller(&self) -> Option<&Client> {
        self.plan.clients.as_ref()?.get(self.caller?)
    }

    /// The 401 for a request whose client the configuration requires and does not know,
    /// logged under the endpoint it asked for.
    fn unauthorized(
        &mut self,
        host: &mut dyn Host,
        e: AuthError,
        models_path: Option<&str>,
        endpoint: Option<Endpoint>,
    ) -> Flow {
        let name = match (models_path, endpoint) {
            (_, Some(endpoint)) => endpoint.name(),
            (Some(p), None) if self.plan.models.is_some() && ModelsCatalog::serves(p) => "models",
            _ => "other",
        };
        self.begin(host, name);
        if let Some(m) = &self.metrics {
            m.clients.unauthorized();
        }
        let error = ApiError::unauthorized(e == AuthError::Missing);
        self.reply_with(host, &error, &[("www-authenticate", "Bearer")])
    }

    /// A request the router handles starts: when the access log is on, its record (timed
    /// by [`RequestFlow::started`]).
    fn begin(&mut self, host: &dyn Host, endpoint: &'static str) {
        if self.plan.access_log {
            let line = record::begin(host, &self.client, self.caller(), endpoint);
            self.record = Some(line);
        }
    }

    /// The request's start is `now` (the first clock read after its headers), unless known.
    fn started(&mut self, now: u64) {
        let start = *self.start_ms.get_or_insert(now);
        record::started(self.record.as_mut(), start);
    }

    /// Answers the client itself with a JSON body (an error, `/v1/models`) and `extra`
    /// headers.
    fn reply_raw(
        &mut self,
        host: &mut dyn Host,
        status: u32,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Flow {
        self.state = State::Replied;
        if let Some(r) = &mut self.record {
            r.status = Some(status);
        }
        let mut headers = vec![("content-type", crate::models::CONTENT_TYPE)];
        headers.extend_from_slice(extra);
        if let Err(e) = host.send_local_reply(status, &headers, body) {
            log::error!("could not send the {status} reply: {e}");
        }
        Flow::Pause
    }

    /// The price of the target that served.
    fn target_price(&self) -> Option<Price> {
        self.report.as_ref()?.price(&self.plan)
    }

    /// What the request cost by the served target's price and the reported usage.
    fn cost(&self) -> Option<f64> {
        answer::cost(self.acc.usage(), self.target_price())
    }

    /// Publishes the access-log line (decision and usage in it) as filter state, once.
    fn publish_record(&mut self, host: &mut dyn Host, end: &StreamEnd) {
        let Some(line) = self.record.take() else {
            return;
        };
        let routed = (self.state == State::Routed).then(|| (self.acc.usage(), self.cost()));
        let start = self.start_ms.unwrap_or(end.now_ms());
        record::publish(host, line, end, start, routed);
    }
}
