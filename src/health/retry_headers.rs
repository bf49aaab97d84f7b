//! Reading "come back later" from provider response headers.
//!
//! Everything here is a pure function of header values and the current time (`now_ms`,
//! milliseconds since the Unix epoch); results are absolute epoch milliseconds ("cool the
//! target down until"). Values that do not parse are ignored (never guessed at), and results
//! are capped at `now + max_ms` so a broken or hostile upstream cannot park a target for days.
//!
//! Understood:
//! - `Retry-After` (RFC 9110): delay-seconds, or an HTTP date in IMF-fixdate
//!   (`Sun, 06 Nov 1994 08:49:37 GMT`) or the obsolete RFC 850 / asctime forms. A fraction of a
//!   second (`1.5`) is accepted as well. `retry-after-ms` (OpenAI, Azure) wins when present.
//! - OpenAI: `x-ratelimit-remaining-requests` / `-tokens` equal to `0` with
//!   `x-ratelimit-reset-requests` / `-tokens` in Go duration format (`1s`, `6m0s`, `20ms`,
//!   `1h2m3.5s`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
//!   equal to `0` with the matching `-reset` as an RFC 3339 timestamp.
//!
//! Reset values of either family are read leniently: a Go duration, an RFC 3339 timestamp, or
//! a bare number (seconds; from 10^9 on, a Unix timestamp in seconds, since a delay of more than
//! 31 years is not meant as one).

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
    let b = value.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    let seps_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !seps_ok {
        return None;
    }
    let mut pos = 19;
    let mut frac_ns: u128 = 0;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let len = b
            .get(start..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if len == 0 {
            return None;
        }
        let frac = value.get(pos..start + len)?;
        frac_ns = parse_decimal(&format!("0{frac}"), 1_000_000_000)?;
        pos = start + len;
    }
    let offset_s: i64 = match b.get(pos..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = two(*h1, *h2)?;
            let mm = two(*m1, *m2)?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let s = i64::from(hh * 3600 + mm * 60);
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let secs = civil_seconds(year, month, day, hour, minute, second)?.checked_sub(offset_s)?;
    let ms = u64::try_from(secs).ok()?.checked_mul(1000)?;
    Some(ms.saturating_add(ns_to_ms_ceil(frac_ns)))
}

/// An HTTP date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 or asctime) in epoch ms.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let (year, month, day, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, mon, y, t, "GMT"] => {
            let wd = wd.strip_suffix(',')?;
            if !SHORT_DAYS.contains(&wd) || d.len() != 2 || y.len() != 4 {
                return None;
            }
            (parse_u64(y)?, month_number(mon)?, parse_u64(d)?, *t)
        }
        // Sunday, 06-Nov-94 08:49:37 GMT
        [wd, date, t, "GMT"] => {
            let wd = wd.strip_suffix(',')?;
            if !LONG_DAYS.contains(&wd) {
                return None;
            }
            let mut it = date.split('-');
            let (d, mon, y) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() || d.len() != 2 || y.len() != 2 {
                return None;
            }
            let yy = parse_u64(y)?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (year, month_number(mon)?, parse_u64(d)?, *t)
        }
        // Sun Nov  6 08:49:37 1994
        [wd, mon, d, t, y] => {
            if !SHORT_DAYS.contains(wd) || d.is_empty() || d.len() > 2 || y.len() != 4 {
                return None;
            }
            (parse_u64(y)?, month_number(mon)?, parse_u64(d)?, *t)
        }
        _ => return None,
    };
    let tb = time.as_bytes();
    if tb.len() != 8 || tb.get(2) != Some(&b':') || tb.get(5) != Some(&b':') {
        return None;
    }
    let (h, m, s) = (digits(tb, 0, 2)?, digits(tb, 3, 2)?, digits(tb, 6, 2)?);
    let secs = civil_seconds(
        u32::try_from(year).ok()?,
        month,
        u32::try_from(day).ok()?,
        h,
        m,
        s,
    )?;
    u64::try_from(secs).ok()?.checked_mul(1000)
}

const SHORT_DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month_number(name: &str) -> Option<u32> {
    let i = MONTHS.iter().position(|m| *m == name)?;
    u32::try_from(i + 1).ok()
}

/// Seconds since the epoch of a UTC civil time; `None` for an impossible date or time.
/// (Days from civil: H. Hinnant's algorithm.)
fn civil_seconds(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 allows a leap second (it reads as the next second).
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `len` ASCII digits of `b` starting at `at`.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(len)?)?;
    s.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn two(a: u8, b: u8) -> Option<u32> {
    digits(&[a, b], 0, 2)
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
