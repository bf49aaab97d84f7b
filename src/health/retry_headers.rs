//! Reading "come back later" from provider response headers.
//!
//! Everything here is a pure function of header values and the current time (`now_ms`,
//! milliseconds since the Unix epoch); results are absolute epoch milliseconds ("cool the
//! target down until"). Values that do not parse are ignored (never guessed at), and results
//! are capped at `now + max_ms` so a broken or hostile upstream cannot park a target for days.
//!
//! Understood:
//! - `Retry-After` (RFC 9110): delay-seconds, or an HTTP date in IMF-fixdate
//!   (`Sun, 06 Nov 1994 08:49:37 GMT`) or the obsolete RFC 850 / asctime forms, read by the
//!   `httpdate` crate (fixed layouts only, the weekday must match the date). A fraction of a
//!   second (`1.5`) is accepted as well. `retry-after-ms` (OpenAI, Azure) wins when present.
//! - OpenAI: `x-ratelimit-remaining-requests` / `-tokens` equal to `0` with
//!   `x-ratelimit-reset-requests` / `-tokens` in Go duration format (`1s`, `6m0s`, `20ms`,
//!   `1h2m3.5s`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
//!   equal to `0` with the matching `-reset` as an RFC 3339 timestamp (read by the `time`
//!   crate).
//!
//! Reset values of either family are read leniently: a Go duration, an RFC 3339 timestamp, or
//! a bare number (seconds; from 10^9 on, a Unix timestamp in seconds, since a delay of more than
//! 31 years is not meant as one).

use std::time::UNIX_EPOCH;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Default cap of any header-driven cooldown: one hour.
pub const DEFAULT_MAX_COOLDOWN_MS: u64 = 3_600_000;

/// Exhausted-limit headers: (remaining, reset).
const LIMIT_HEADERS: &[(&str, &str)] = &[
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// Bare numbers from here on are Unix timestamps (seconds), not delays.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;

/// Until when (epoch ms) the response's headers ask us to leave the target alone, or `None`.
///
/// `Retry-After` / `retry-after-ms` count for 429 and 503 only; an exhausted rate limit
/// (`remaining: 0` with a parsable reset) counts whatever the status, because a successful
/// response can announce that the next request will be refused. When several limits are
/// exhausted the latest reset wins (all of them must have reset). The result is later than
/// `now_ms` and at most `now_ms + max_ms`.
pub fn cooldown_until(
    status: u32,
    header: &dyn Fn(&str) -> Option<String>,
    now_ms: u64,
    max_ms: u64,
) -> Option<u64> {
    let mut until: Option<u64> = None;
    if status == 429 || status == 503 {
        until = retry_after_until(header, now_ms);
    }
    for (remaining, reset) in LIMIT_HEADERS {
        let exhausted = header(remaining)
            .and_then(|v| parse_u64(v.trim()))
            .is_some_and(|n| n == 0);
        if !exhausted {
            continue;
        }
        if let Some(t) = header(reset).and_then(|v| parse_reset(&v, now_ms)) {
            until = Some(until.map_or(t, |u| u.max(t)));
        }
    }
    let until = until?.min(now_ms.saturating_add(max_ms));
    (until > now_ms).then_some(until)
}

/// `retry-after-ms`, else `Retry-After`, as an absolute time (uncapped).
pub fn retry_after_until(header: &dyn Fn(&str) -> Option<String>, now_ms: u64) -> Option<u64> {
    if let Some(ms) = header("retry-after-ms").and_then(|v| parse_decimal(v.trim(), 1_000_000)) {
        return Some(now_ms.saturating_add(ns_to_ms_ceil(ms)));
    }
    header("retry-after").and_then(|v| parse_retry_after(&v, now_ms))
}

/// One `Retry-After` value: delay-seconds (fraction allowed) or an HTTP date.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if v.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let ns = parse_decimal(v, 1_000_000_000)?;
        return Some(now_ms.saturating_add(ns_to_ms_ceil(ns)));
    }
    parse_http_date(v)
}

/// A rate-limit reset value of either family (see the module docs), as an absolute time.
pub fn parse_reset(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Some(ms) = parse_go_duration(v) {
        return Some(now_ms.saturating_add(ms));
    }
    if let Some(t) = parse_rfc3339(v) {
        return Some(t);
    }
    let ns = parse_decimal(v, 1_000_000_000)?;
    let ms = ns_to_ms_ceil(ns);
    if ns / 1_000_000_000 >= u128::from(EPOCH_SECONDS_FROM) {
        Some(ms)
    } else {
        Some(now_ms.saturating_add(ms))
    }
}

/// A Go / OpenAI duration (`1s`, `6m0s`, `20ms`, `1h2m3.5s`, `0`) in milliseconds, rounded up.
/// Units: `h`, `m`, `s`, `ms`, `us` / `µs`, `ns`. Signs, blanks and unknown units are refused;
/// huge values saturate.
pub fn parse_go_duration(value: &str) -> Option<u64> {
    if value == "0" {
        return Some(0);
    }
    let mut rest = value;
    let mut total_ns: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u64 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total_ns = total_ns.saturating_add(parse_decimal(num, unit_ns)?);
        rest = tail;
    }
    Some(ns_to_ms_ceil(total_ns))
}

/// An RFC 3339 timestamp (`2024-05-01T12:00:30Z`, `...30.25+02:00`) in epoch ms (fractions
/// of a millisecond round up). Times before 1970 are refused.
pub fn parse_rfc3339(value: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    u128::try_from(t.unix_timestamp_nanos())
        .ok()
        .map(ns_to_ms_ceil)
}

/// An HTTP date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 or asctime) in epoch ms.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(value).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// Plain ASCII digits (no sign, no blanks), saturating.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, c| {
        acc.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

/// `digits[.digits]` (either side may be empty, not both) times `unit_ns`, in nanoseconds,
/// saturating. Fraction digits past the 18th are ignored.
fn parse_decimal(s: &str, unit_ns: u64) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let int_val = int.bytes().fold(0u128, |acc, c| {
        acc.saturating_mul(10).saturating_add(u128::from(c - b'0'))
    });
    let unit = u128::from(unit_ns);
    let mut ns = int_val.saturating_mul(unit);
    let mut scale: u128 = 1;
    let mut frac_val: u128 = 0;
    for c in frac.bytes().take(18) {
        frac_val = frac_val * 10 + u128::from(c - b'0');
        scale *= 10;
    }
    // frac_val < 10^18 and unit < 2^64: the product fits in u128. Round up.
    ns = ns.saturating_add((frac_val * unit).div_ceil(scale));
    Some(ns)
}

fn ns_to_ms_ceil(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
