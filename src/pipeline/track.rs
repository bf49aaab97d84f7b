//! Health tracking of one request sent to one target, from admission to the end of the
//! stream: the response headers give the verdict (status, rate-limit headers, which cool the
//! target down at once), the end of the body the tokens used, and the end of the stream
//! (`on_log`) finishes it exactly once, including streams the client abandoned or the
//! upstream reset. Used by the request flow (one target per request) and by the attempt flow
//! (one target per failover attempt).

use crate::config::plan::Plan;
use crate::health::{retry_headers, Budget, HealthBoard, Outcome};
use crate::host::Host;

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
    /// Response flags reported by the failover hop.
    flags: u64,
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

/// The request being tracked on the health board, if any.
#[derive(Debug, Default)]
pub struct Tracker {
    board: HealthBoard,
    tracked: Option<Tracked>,
}

impl Tracker {
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
            tail: Vec::new(),
            usage: None,
        });
    }

    /// Reads the verdict of the response headers; a rate-limit cooldown applies at once.
    /// `flags` adds response flags known from elsewhere (the failover hop reports those of
    /// its own stream in a header).
    pub fn observe_response(&mut self, host: &mut dyn Host, plan: &Plan, flags: u64) {
        let board = self.board;
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
        t.flags |= flags;
        t.ttfb_ms = Some(now.saturating_sub(t.start_ms));
        t.until_ms = until;
        if let Some(until) = until {
            let key = t.key.clone();
            if let Err(e) = board.update(host, &key, |h| h.rate_limited_until(until, now, policy)) {
                log::warn!("llm-router: could not record the rate limit of {key}: {e}");
            }
        }
    }

    /// A response body chunk passes (never held): when the target has a tokens-per-minute
    /// budget, the end of the body is kept to read the tokens its `usage` reports.
    pub fn on_response_body(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) {
        let Some(t) = self.tracked.as_mut().filter(|t| t.count_usage) else {
            return;
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
    }

    /// The end of the stream: finishes the tracked request, once, with what the response
    /// said, or, when no response came, with what Envoy's response flags say (connection
    /// failure, reset, timeout) or as cancelled.
    pub fn finish_at_end(&mut self, host: &mut dyn Host, plan: &Plan) {
        let Some(t) = self.tracked.take() else {
            return;
        };
        let now = now_ms(host);
        let flags = t.flags | int_property(host, &["response", "flags"]).unwrap_or(0);
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
