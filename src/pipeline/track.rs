//! Health tracking of one request sent to one target, from admission to the end of the
//! stream: the response headers give the verdict (status, rate-limit headers, which cool the
//! target down at once), the end of the body the tokens used, and the end of the stream
//! (`on_log`) finishes it exactly once, including streams the client abandoned or the
//! upstream reset. Used by the request flow (one target per request) and by the attempt flow
//! (one target per failover attempt).
//!
//! [`Meter`] does the same for Envoy stats (whether or not health is on), and [`Accounting`]
//! reads the response's `usage` (from its events or its JSON body) that both of them use.

use std::rc::Rc;

use crate::config::plan::Plan;
use crate::health::deferred::can_wait;
use crate::health::{retry_headers, Budget, HealthBoard, Outcome};
use crate::host::{header_value, HeaderPairs, Host};
use crate::metrics::{Finish, Metrics, Scopes};
use crate::usage::{BodyUsage, Edit, StreamUsage, Usage};

/// Envoy's response flags (the `response.flags` attribute, a bit vector).
pub mod response_flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: u64 = 0x80000;
    /// E.g. the upstream broke off a chunked (streamed) body.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    pub const DNS_RESOLUTION_FAILURE: u64 = 0x400_0000;
    /// Any of these: the target could not be reached or dropped the stream.
    pub const CONNECT_FAILURE: u64 = NO_HEALTHY_UPSTREAM
        | UPSTREAM_REMOTE_RESET
        | UPSTREAM_CONNECTION_FAILURE
        | UPSTREAM_CONNECTION_TERMINATION
        | UPSTREAM_OVERFLOW
        | UPSTREAM_PROTOCOL_ERROR
        | DNS_RESOLUTION_FAILURE;
    pub const TIMEOUT: u64 =
        UPSTREAM_REQUEST_TIMEOUT | STREAM_IDLE_TIMEOUT | UPSTREAM_MAX_STREAM_DURATION_REACHED;
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
    /// Response flags reported by the failover hop.
    flags: u64,
    /// Tokens charged at admission (the prompt estimate).
    charged: u64,
    /// The target has a tokens-per-minute budget: read `usage` from the response.
    count_usage: bool,
}

/// The request being tracked on the health board, if any.
#[derive(Debug, Default)]
pub struct Tracker {
    board: HealthBoard,
    tracked: Option<Tracked>,
    /// Counts cooldowns the request's outcome starts.
    metrics: Option<Rc<Metrics>>,
}

impl Tracker {
    pub fn with_metrics(metrics: Option<Rc<Metrics>>) -> Tracker {
        Tracker {
            metrics,
            ..Tracker::default()
        }
    }

    /// Tracks on `board` (one whose successful finishes wait for this worker's next write).
    pub fn set_board(&mut self, board: HealthBoard) {
        self.board = board;
    }

    /// Whether the response's `usage` matters (the target has a token budget).
    pub fn wants_usage(&self) -> bool {
        self.tracked.as_ref().is_some_and(|t| t.count_usage)
    }

    fn count_cooldown(&self, host: &mut dyn Host, key: &str, entered: bool) {
        if let (true, Some(m)) = (entered, &self.metrics) {
            m.cooldown_entered(host, m.target(key));
        }
    }

    pub fn is_tracked(&self) -> bool {
        self.tracked.is_some()
    }

    pub fn is_probe(&self) -> bool {
        self.tracked.as_ref().is_some_and(|t| t.probe)
    }

    /// Starts tracking a request that the board admitted to `key` (in flight + 1 already
    /// recorded by the admission).
    pub fn start(&mut self, key: &str, probe: bool, now_ms: u64, tokens: u64, budget: &Budget) {
        self.tracked = Some(Tracked {
            key: key.to_owned(),
            probe,
            start_ms: now_ms,
            ttfb_ms: None,
            status: None,
            until_ms: None,
            flags: 0,
            charged: tokens,
            count_usage: budget.tpm.is_some(),
        });
    }

    /// Reads the verdict of the response headers; a rate-limit cooldown applies at once.
    /// `flags` adds response flags known from elsewhere (the failover hop reports those of
    /// its own stream in a header).
    /// `headers`: all response headers (one host call for all: the rate-limit checks look at
    /// up to eight of them); `status`: their `:status`, read once by the caller (0 when
    /// missing or not a number).
    fn observe_response(
        &mut self,
        host: &mut dyn Host,
        plan: &Plan,
        headers: &[(String, Vec<u8>)],
        status: u32,
        flags: u64,
        now: u64,
    ) {
        let board = self.board.clone();
        let Some(t) = self.tracked.as_mut() else {
            return;
        };
        if t.status.is_some() {
            return;
        }
        let header = |name: &str| header_value(headers, name).map(str::to_owned);
        let policy = &plan.health.policy;
        let until =
            retry_headers::cooldown_until(status, &header, now, policy.max_rate_limit_cooldown_ms);
        t.status = Some(status);
        t.flags |= flags;
        t.ttfb_ms = Some(now.saturating_sub(t.start_ms));
        t.until_ms = until;
        if let Some(until) = until {
            let key = t.key.clone();
            match board.update(host, &key, |h| {
                let before = h.cooldown_until_ms;
                h.rate_limited_until(until, now, policy);
                before <= now && h.cooldown_until_ms > now
            }) {
                Ok((_, entered)) => self.count_cooldown(host, &key, entered),
                Err(e) => log::warn!("llm-router: could not record the rate limit of {key}: {e}"),
            }
        }
    }

    /// The end of the stream: finishes the tracked request, once, with what the response
    /// said, or, when no response came, with what Envoy's response flags say (connection
    /// failure, reset, timeout) or as cancelled.
    /// `usage`: what the response reported.
    fn finish_at_end(
        &mut self,
        host: &mut dyn Host,
        plan: &Plan,
        usage: Option<Usage>,
        end: &StreamEnd,
    ) {
        let Some(t) = self.tracked.take() else {
            return;
        };
        let now = end.now_ms;
        let mut outcome = end.outcome(t.status, t.until_ms, t.flags, t.start_ms, t.ttfb_ms);
        if let (Outcome::Success { tokens, .. }, Some(usage)) = (&mut outcome, usage) {
            *tokens = usage.total.saturating_sub(t.charged);
        }
        self.finish(host, plan, &t, outcome, now);
    }

    /// Admitted but never sent upstream: not held against the target.
    pub fn cancel(&mut self, host: &mut dyn Host, plan: &Plan) {
        if let Some(t) = self.tracked.take() {
            let now = now_ms(host);
            self.finish(host, plan, &t, Outcome::Cancelled, now);
        }
    }

    fn finish(&self, host: &mut dyn Host, plan: &Plan, t: &Tracked, outcome: Outcome, now: u64) {
        let policy = &plan.health.policy;
        let load_aware = plan.targets.get(&t.key).is_some_and(|r| r.load_aware);
        let may_wait = can_wait(&outcome, t.probe, t.count_usage, load_aware);
        let finished = self
            .board
            .finish(host, &t.key, outcome, t.probe, now, policy, may_wait);
        match finished {
            Ok(entered) => self.count_cooldown(host, &t.key, entered),
            Err(e) => log::warn!(
                "llm-router: could not record the outcome for {}: {e}",
                t.key
            ),
        }
    }
}

/// What Envoy says at the end of a stream, read once for everything the request is counted
/// in: its response flags and code, and the time.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd {
    flags: u64,
    code: Option<u32>,
    now_ms: u64,
}

impl StreamEnd {
    /// `completed`: the status of a response whose body ended, as the flow saw it; then
    /// Envoy has nothing to add (no flag of a failed upstream, the code the client got) and
    /// only the clock is read.
    pub fn read(host: &dyn Host, completed: Option<u32>) -> StreamEnd {
        if let Some(code) = completed {
            return StreamEnd {
                flags: 0,
                code: Some(code),
                now_ms: now_ms(host),
            };
        }
        StreamEnd {
            flags: int_property(host, &["response", "flags"]).unwrap_or(0),
            code: int_property(host, &["response", "code"])
                .filter(|c| *c > 0)
                .and_then(|c| u32::try_from(c).ok()),
            now_ms: now_ms(host),
        }
    }

    /// Envoy's response code (the status the client got), if any.
    pub fn code(&self) -> Option<u32> {
        self.code
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// How a request ended: the status its response headers gave (else Envoy's response
    /// code), and the response flags (plus `flags` known from elsewhere).
    fn outcome(
        &self,
        status: Option<u32>,
        until_ms: Option<u64>,
        flags: u64,
        start_ms: u64,
        ttfb_ms: Option<u64>,
    ) -> Outcome {
        let latency = self.now_ms.saturating_sub(start_ms);
        outcome_of(
            status.or(self.code),
            until_ms,
            flags | self.flags,
            latency,
            ttfb_ms,
        )
    }
}

/// One request counted in Envoy stats at some scopes, from start to end (exactly once).
#[derive(Debug)]
pub struct Meter {
    metrics: Rc<Metrics>,
    at: Scopes,
    start_ms: u64,
    ttfb_ms: Option<u64>,
    status: Option<u32>,
    flags: u64,
    /// The prompt estimate: the prompt tokens when the response reports no `usage`.
    estimate: u64,
}

impl Meter {
    /// Counts the request as started at `at`, at `now` (ms).
    pub fn start(
        metrics: &Rc<Metrics>,
        host: &mut dyn Host,
        at: Scopes,
        estimate: u64,
        now: u64,
    ) -> Meter {
        metrics.request_started(host, at);
        Meter {
            metrics: Rc::clone(metrics),
            at,
            start_ms: now,
            ttfb_ms: None,
            status: None,
            flags: 0,
            estimate,
        }
    }

    /// The response headers arrived: status and time to first byte.
    fn observe(&mut self, status: Option<u32>, flags: u64, now: u64) {
        if self.status.is_some() {
            return;
        }
        self.status = status;
        self.ttfb_ms = Some(now.saturating_sub(self.start_ms));
        self.flags |= flags;
    }

    /// Prices the cost by another target (the one a failover attempt ended on); the counts
    /// stay where they started.
    pub fn reprice(&mut self, at: Scopes) {
        self.at = at;
    }

    fn finish(self, host: &mut dyn Host, usage: Option<Usage>, end: &StreamEnd) {
        let outcome = end.outcome(self.status, None, self.flags, self.start_ms, self.ttfb_ms);
        let mut end = Finish::from_outcome(&outcome);
        match usage {
            Some(u) => {
                end.prompt_tokens = u.prompt;
                end.completion_tokens = u.completion;
                end.cached_tokens = u.cached.unwrap_or(0);
            }
            None if matches!(outcome, Outcome::Success { .. }) => end.prompt_tokens = self.estimate,
            None => {}
        }
        self.metrics.request_finished(host, self.at, &end);
    }

    /// Never sent: counted as cancelled.
    pub fn cancel(self, host: &mut dyn Host) {
        self.metrics
            .request_finished(host, self.at, &Finish::from_outcome(&Outcome::Cancelled));
    }
}

/// Everything one request (or failover attempt) is counted in: the health board, Envoy
/// stats, and the `usage` the response reports, which both read.
#[derive(Debug, Default)]
pub struct Accounting {
    pub tracker: Tracker,
    /// The request in Envoy stats, once it was sent.
    pub meter: Option<Meter>,
    /// Reads the response's usage as it passes, once the headers said how.
    reader: Option<UsageReader>,
    /// What the response reported, once its body ended.
    usage: Option<Usage>,
    /// The response's status, from its headers.
    status: Option<u32>,
    /// The response's body ended (its end of stream, or its trailers).
    ended: bool,
}

/// How a response reports its usage: in its server-sent events, or in its JSON body.
#[derive(Debug)]
enum UsageReader {
    Stream(StreamUsage),
    Body(BodyUsage),
}

impl Accounting {
    pub fn new(metrics: Option<Rc<Metrics>>) -> Accounting {
        Accounting {
            tracker: Tracker::with_metrics(metrics),
            ..Accounting::default()
        }
    }

    /// The response headers: the health verdict, status and time to first byte for stats,
    /// and how the body reports its usage. `flags`: response flags known from elsewhere
    /// (the failover hop's). `strip`: remove the usage-only chunk from a stream (the router
    /// asked for it, the client did not). `now`: the callback's time (ms). Returns the
    /// response headers (one host call).
    pub fn on_response_headers(
        &mut self,
        host: &mut dyn Host,
        plan: &Plan,
        flags: u64,
        strip: bool,
        now: u64,
    ) -> HeaderPairs {
        let headers = host.response_headers().unwrap_or_default();
        self.on_response_map(host, plan, &headers, flags, strip, now);
        headers
    }

    /// [`Accounting::on_response_headers`] for headers already read.
    pub fn on_response_map(
        &mut self,
        host: &mut dyn Host,
        plan: &Plan,
        headers: &[(String, Vec<u8>)],
        flags: u64,
        strip: bool,
        now: u64,
    ) {
        let status = header_value(headers, ":status").and_then(|v| v.trim().parse().ok());
        self.tracker
            .observe_response(host, plan, headers, status.unwrap_or(0), flags, now);
        self.status = status;
        if let Some(meter) = &mut self.meter {
            meter.observe(status, flags, now);
        }
        self.reader = Some(if is_event_stream(headers) {
            UsageReader::Stream(StreamUsage::new(strip))
        } else {
            UsageReader::Body(BodyUsage::default())
        });
    }

    /// A response body chunk (`body_size` bytes) passes; never held here. Returns what the
    /// client should get instead, when that differs (only when stripping a stream). Once the
    /// body ended, later chunks and ends change nothing.
    pub fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end: bool) -> Edit {
        if self.reader.is_none() {
            return Edit::Unchanged;
        }
        let chunk = match host.response_body(body_size) {
            Ok(Some(chunk)) => chunk,
            _ => Vec::new(),
        };
        self.on_response_chunk(&chunk, end)
    }

    /// [`Accounting::on_response_body`] for a chunk already read.
    pub fn on_response_chunk(&mut self, chunk: &[u8], end: bool) -> Edit {
        let Some(reader) = &mut self.reader else {
            return Edit::Unchanged;
        };
        self.ended |= end;
        match reader {
            UsageReader::Stream(stream) => {
                let edit = stream.push(chunk, end);
                if end {
                    self.usage = stream.usage();
                    self.reader = None;
                }
                edit
            }
            UsageReader::Body(body) => {
                body.push(chunk);
                if end {
                    self.usage = body.finish();
                    self.reader = None;
                }
                Edit::Unchanged
            }
        }
    }

    /// What the response reported: final once its body ended; for a stream cut short, what
    /// its events said so far.
    pub fn usage(&self) -> Option<Usage> {
        match (&self.usage, &self.reader) {
            (Some(u), _) => Some(*u),
            (None, Some(UsageReader::Stream(stream))) => stream.usage(),
            _ => None,
        }
    }

    /// The response's `:status`, once its headers came.
    pub fn status(&self) -> Option<u32> {
        self.status
    }

    /// The status of a response that came whole (headers with a status, and the end of its
    /// body), for [`StreamEnd::read`].
    pub fn completed(&self) -> Option<u32> {
        self.status.filter(|s| *s > 0 && self.ended)
    }

    /// Whether the request is counted somewhere and not yet finished (only then is the end
    /// of its stream worth reading).
    pub fn is_open(&self) -> bool {
        self.tracker.is_tracked() || self.meter.is_some()
    }

    /// The end of the stream: finishes the request everywhere it is counted, once.
    pub fn finish(&mut self, host: &mut dyn Host, plan: &Plan, end: &StreamEnd) {
        if !self.is_open() {
            return;
        }
        let usage = self.usage();
        self.tracker.finish_at_end(host, plan, usage, end);
        if let Some(meter) = self.meter.take() {
            meter.finish(host, usage, end);
        }
    }

    /// Answered locally, never sent: counted as cancelled.
    pub fn cancel(&mut self, host: &mut dyn Host, plan: &Plan) {
        self.tracker.cancel(host, plan);
        if let Some(meter) = self.meter.take() {
            meter.cancel(host);
        }
    }
}

/// Whether the response is a stream of server-sent events.
pub fn is_event_stream(headers: &[(String, Vec<u8>)]) -> bool {
    header_value(headers, "content-type").is_some_and(|v| {
        v.trim_start()
            .get(..17)
            .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
    })
}

pub fn now_ms(host: &dyn Host) -> u64 {
    host.now_nanos() / 1_000_000
}

/// Envoy's short response-flag names (`%RESPONSE_FLAGS%`, comma separated) as bits of the
/// `response.flags` attribute; unknown names are ignored.
pub fn response_flags_from_names(names: &str) -> u64 {
    use response_flags::*;
    names
        .split(',')
        .map(|n| match n.trim() {
            "UH" => NO_HEALTHY_UPSTREAM,
            "UT" => UPSTREAM_REQUEST_TIMEOUT,
            "UR" => UPSTREAM_REMOTE_RESET,
            "UF" => UPSTREAM_CONNECTION_FAILURE,
            "UC" => UPSTREAM_CONNECTION_TERMINATION,
            "UO" => UPSTREAM_OVERFLOW,
            "SI" => STREAM_IDLE_TIMEOUT,
            "UMSDR" => UPSTREAM_MAX_STREAM_DURATION_REACHED,
            "UPE" => UPSTREAM_PROTOCOL_ERROR,
            "DF" => DNS_RESOLUTION_FAILURE,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
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
