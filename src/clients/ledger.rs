//! A client's ledger: its requests and tokens over a sliding minute (for `rpm` / `tpm`) and
//! its spend in the current calendar month (for `monthly_budget`), one fixed-size record per
//! configured client in shared data (key `llm_router.c.<name>`), changed only through
//! [`crate::host::shared::update`]. Memory is bounded by the configuration: clients that are
//! not configured never get a record.
//!
//! The minute is the health module's [`Window`]: 6 buckets of 10 s, so a full window frees
//! its oldest bucket 50 to 60 s after it filled. A request is admitted while the window's
//! count is below the limit, and counts from then on; compare-and-swap makes admission
//! exact across workers (100 concurrent requests against `rpm: 20`: 20 pass).
//!
//! # Encoding (little-endian, [`ENCODED_LEN`] bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version ([`VERSION`]) |
//! | 1 | 3 | reserved, 0 |
//! | 4 | 4 | month ([`crate::calendar::month_index`]) of `spent` |
//! | 8 | 8 | spent this month, millionths of the price currency |
//! | 16 | 80 | window: head u64, then 6 × (requests, unused, tokens) u32 |

use super::Limits;
use crate::calendar::{month_index, month_start_ms};
use crate::health::codec::{put_window, Reader, WINDOW_LEN};
use crate::health::window::{Field, BUCKETS};
use crate::health::Window;
use crate::host::shared::Record;

/// Prefix of every client's shared-data key.
pub const KEY_PREFIX: &str = "llm_router.c.";
/// The rate-limit window: one minute.
pub const WINDOW_MS: u64 = 60_000;
pub const BUCKET_MS: u64 = WINDOW_MS / BUCKETS as u64;

pub const VERSION: u8 = 1;
pub const ENCODED_LEN: usize = 16 + WINDOW_LEN;

/// The shared-data key of a client (names are validated: no escaping needed).
pub fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientUsage {
    /// Requests and tokens admitted over the last minute.
    pub window: Window,
    /// The month `spent_micro` belongs to.
    pub month: u32,
    pub spent_micro: u64,
}

/// One limit as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u64,
    pub remaining: u64,
    /// Until the count next goes down (0 when nothing is counted).
    pub reset_ms: u64,
}

/// What a client has left of its per-minute limits (those it has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub requests: Option<Allowance>,
    pub tokens: Option<Allowance>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Requests,
    Tokens,
    Budget,
}

/// A refused request: why, what was used of which limit, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub exceeded: Exceeded,
    pub limit: u64,
    pub used: u64,
    pub retry_after_ms: u64,
    pub quota: Quota,
}

impl ClientUsage {
    /// Admits a request estimated at `tokens` prompt tokens at `now_ms`, or says which limit
    /// refuses it. Admitted requests count in the window at once.
    pub fn admit(&mut self, now_ms: u64, limits: &Limits, tokens: u64) -> Result<Quota, Limited> {
        self.roll_month(now_ms);
        if let Some(budget) = limits.monthly_budget_micro {
            if self.spent_micro >= budget {
                let next_month = month_start_ms(self.month.saturating_add(1));
                return Err(Limited {
                    exceeded: Exceeded::Budget,
                    limit: budget,
                    used: self.spent_micro,
                    retry_after_ms: next_month.saturating_sub(now_ms),
                    quota: self.quota(now_ms, limits),
                });
            }
        }
        let totals = self.window.totals(now_ms, BUCKET_MS);
        let over = [
            (
                Exceeded::Requests,
                Field::Requests,
                limits.rpm.map(u64::from),
                totals.requests,
            ),
            (Exceeded::Tokens, Field::Tokens, limits.tpm, totals.tokens),
        ]
        .into_iter()
        .find_map(|(exceeded, field, limit, used)| {
            let limit = limit.filter(|l| used >= *l)?;
            let back = self.window.recovery_ms(now_ms, BUCKET_MS, field, limit)?;
            Some((exceeded, limit, used, back))
        });
        if let Some((exceeded, limit, used, back)) = over {
            return Err(Limited {
                exceeded,
                limit,
                used,
                retry_after_ms: back.saturating_sub(now_ms),
                quota: self.quota(now_ms, limits),
            });
        }
        self.window.record(now_ms, BUCKET_MS, 1, 0, tokens);
        Ok(self.quota(now_ms, limits))
    }

    /// The end of an admitted request: tokens beyond those counted at admission, and its cost.
    pub fn settle(&mut self, now_ms: u64, extra_tokens: u64, cost_micro: u64) {
        if extra_tokens > 0 {
            self.window.record(now_ms, BUCKET_MS, 0, 0, extra_tokens);
        }
        self.roll_month(now_ms);
        self.spent_micro = self.spent_micro.saturating_add(cost_micro);
    }

    /// The per-minute limits as they stand at `now_ms`.
    pub fn quota(&self, now_ms: u64, limits: &Limits) -> Quota {
        let totals = self.window.totals(now_ms, BUCKET_MS);
        let allowance = |limit: u64, used: u64, field: Field| Allowance {
            limit,
            remaining: limit.saturating_sub(used),
            reset_ms: self
                .window
                .recovery_ms(now_ms, BUCKET_MS, field, used)
                .map_or(0, |at| at.saturating_sub(now_ms)),
        };
        Quota {
            requests: limits
                .rpm
                .map(|l| allowance(u64::from(l), totals.requests, Field::Requests)),
            tokens: limits
                .tpm
                .map(|l| allowance(l, totals.tokens, Field::Tokens)),
        }
    }

    /// A new calendar month starts the spend afresh (a clock behind the stored month, on
    /// another worker, changes nothing).
    fn roll_month(&mut self, now_ms: u64) {
        let month = month_index(now_ms);
        if month > self.month {
            self.month = month;
            self.spent_micro = 0;
        }
    }
}

impl Record for ClientUsage {
    fn decode(bytes: &[u8]) -> Option<ClientUsage> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let mut r = Reader::new(bytes);
        if r.take::<4>()? != [VERSION, 0, 0, 0] {
            return None;
        }
        Some(ClientUsage {
            month: r.u32()?,
            spent_micro: r.u64()?,
            window: r.window()?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.extend_from_slice(&[VERSION, 0, 0, 0]);
        out.extend_from_slice(&self.month.to_le_bytes());
        out.extend_from_slice(&self.spent_micro.to_le_bytes());
        put_window(&mut out, &self.window);
        out
    }
}

/// The `x-ratelimit-*` headers of a quota, as OpenAI sends them.
pub fn rate_limit_headers(quota: &Quota) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    if let Some(a) = quota.requests {
        out.push(("x-ratelimit-limit-requests", a.limit.to_string()));
        out.push(("x-ratelimit-remaining-requests", a.remaining.to_string()));
        out.push(("x-ratelimit-reset-requests", duration(a.reset_ms)));
    }
    if let Some(a) = quota.tokens {
        out.push(("x-ratelimit-limit-tokens", a.limit.to_string()));
        out.push(("x-ratelimit-remaining-tokens", a.remaining.to_string()));
        out.push(("x-ratelimit-reset-tokens", duration(a.reset_ms)));
    }
    out
}

/// The names [`rate_limit_headers`] may set.
pub const RATE_LIMIT_HEADERS: [&str; 6] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `250ms`, `7s`, `1m0s`, `1h2m3s`
/// (whole seconds, rounded up, from one second on).
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec}s"),
        (h, min, sec) => format!("{h}h{min}m{sec}s"),
    }
}

/// `Retry-After`: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}
