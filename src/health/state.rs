//! The health of one provider target and its cooldown / circuit-breaker state machine.
//!
//! Everything is a pure function of the stored state, the time (`now_ms`, epoch ms) and the
//! policy, so the same code runs in every worker on the state read from shared data.
//!
//! ```text
//!            failures > allowed_fails, or failure rate over threshold
//!   Closed ───────────────────────────────────────────────────────────▶ Open (cooling down)
//!     ▲                                                                     │ cooldown over
//!     │ probe succeeds                                                      ▼
//!     └──────────────────────────── HalfOpen (one probe in flight) ◀── try_claim_probe
//!                                        │ probe fails: Open again (new cooldown)
//!                                        │ probe silent past probe_timeout: claimable again
//! ```
//!
//! Independent of the circuit, `cooldown_until_ms` also holds a provider-announced rate-limit
//! reset (429 with `Retry-After`, or an exhausted `x-ratelimit-remaining-*`): the target is
//! skipped exactly until then and, if its circuit is closed, trusted again right after. A
//! target over its requests-per-minute or tokens-per-minute budget is skipped until enough of
//! its one-minute window has slid out.

use super::ewma::{Alpha, Ewma};
use super::window::{Field, Window, BUCKETS};
use crate::config::error::ConfigError;

/// The budget window: one minute in [`BUCKETS`] buckets.
pub const BUDGET_WINDOW_MS: u64 = 60_000;
pub const BUDGET_BUCKET_MS: u64 = BUDGET_WINDOW_MS / BUCKETS as u64;

const DAY_MS: u64 = 86_400_000;

/// When a target is skipped, and for how long: like LiteLLM's `allowed_fails` /
/// `cooldown_time`, plus a failure-rate trigger and a half-open probe.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failures tolerated; one more opens the circuit (LiteLLM's meaning:
    /// with 3, the 4th failure in a row cools the target down; 0 trips on the first).
    pub allowed_fails: u32,
    /// How long an opened circuit skips the target before a probe may go.
    pub cooldown_ms: u64,
    /// Failure fraction (0, 1] over `failure_window_ms` that also opens the circuit;
    /// `None` turns this trigger off.
    pub failure_rate_threshold: Option<f64>,
    /// Length of the failure-rate window (split into [`BUCKETS`] buckets).
    pub failure_window_ms: u64,
    /// Finished requests the window must hold before the failure rate counts.
    pub min_requests: u32,
    /// A probe that has not reported after this long no longer blocks the next probe.
    pub probe_timeout_ms: u64,
    /// Weight of the newest sample in the latency and time-to-first-byte averages.
    pub alpha: Alpha,
    /// Cap of any provider-announced cooldown (`Retry-After`, rate-limit resets).
    pub max_rate_limit_cooldown_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            allowed_fails: 3,
            cooldown_ms: 30_000,
            failure_rate_threshold: Some(0.5),
            failure_window_ms: 60_000,
            min_requests: 10,
            probe_timeout_ms: 30_000,
            alpha: Alpha::DEFAULT,
            max_rate_limit_cooldown_ms: super::retry_headers::DEFAULT_MAX_COOLDOWN_MS,
        }
    }
}

fn field_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

impl HealthPolicy {
    /// Width of one failure-rate bucket.
    pub fn failure_bucket_ms(&self) -> u64 {
        (self.failure_window_ms / BUCKETS as u64).max(1)
    }

    /// Checks the ranges; errors name the field under `prefix` (e.g. `health`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let err = |name: &str, msg: &str| Err(ConfigError::new(field_name(prefix, name), msg));
        if self.cooldown_ms > DAY_MS {
            return err("cooldown_ms", "must be at most 86400000 (one day)");
        }
        if !(1_000..=3_600_000).contains(&self.failure_window_ms) {
            return err(
                "failure_window_ms",
                "must be between 1000 and 3600000 (one hour)",
            );
        }
        if let Some(t) = self.failure_rate_threshold {
            if !(t > 0.0 && t <= 1.0) {
                return err(
                    "failure_rate_threshold",
                    "must be a fraction greater than 0 and at most 1",
                );
            }
        }
        if self.min_requests == 0 {
            return err("min_requests", "must be at least 1");
        }
        if !(1..=DAY_MS).contains(&self.probe_timeout_ms) {
            return err("probe_timeout_ms", "must be between 1 and 86400000");
        }
        if !(1..=DAY_MS).contains(&self.max_rate_limit_cooldown_ms) {
            return err(
                "max_rate_limit_cooldown_ms",
                "must be between 1 and 86400000",
            );
        }
        Ok(())
    }
}

/// Per-target budgets over a sliding minute. `None` (or 0) is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Requests per minute (counted when they start).
    pub rpm: Option<u32>,
    /// Tokens per minute (the prompt estimate at start, plus usage reported at the end).
    pub tpm: Option<u64>,
}

impl Budget {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.rpm == Some(0) {
            return Err(ConfigError::new(
                field_name(prefix, "rpm"),
                "must be at least 1",
            ));
        }
        if self.tpm == Some(0) {
            return Err(ConfigError::new(
                field_name(prefix, "tpm"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// How one request to a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered (2xx, or a 4xx other than 429 that is the client's fault).
    /// `tokens`: usage tokens not yet charged by [`TargetHealth::on_start`] (the reported
    /// total minus the estimate, saturating at 0).
    Success {
        latency_ms: u64,
        ttfb_ms: Option<u64>,
        tokens: u64,
    },
    Status5xx,
    /// Status 429: with `until_ms` (from [`super::retry_headers::cooldown_until`]) the target cools
    /// down exactly until then and the failure does not count toward the circuit; without,
    /// it is an ordinary failure.
    RateLimited {
        until_ms: Option<u64>,
    },
    /// Connection refused or reset, or the upstream reset the stream.
    ConnectFailure,
    Timeout,
    /// The client went away: not held against the target.
    Cancelled,
}

/// The circuit of [`TargetHealth`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Circuit {
    #[default]
    Closed,
    /// Tripped: skipped until `cooldown_until_ms`, then one probe may go.
    Open,
    /// A probe was claimed at `probe_started_ms` and has not reported.
    HalfOpen,
}

/// Why a target is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhealthy {
    /// The circuit is open (too many failures).
    CoolingDown,
    /// The provider said when to come back.
    RateLimited,
    /// Half-open and another request is the probe.
    ProbeInFlight,
    /// Out of its requests- or tokens-per-minute budget.
    OverBudget,
}

/// Whether a target may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Half-open: one request may go as the probe, after winning [`TargetHealth::try_claim_probe`].
    Probe,
    Unavailable {
        until_ms: u64,
        reason: Unhealthy,
    },
}

impl Availability {
    /// Available or probe-able.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Availability::Unavailable { .. })
    }

    /// When it can take traffic (0: now).
    pub fn ready_at(&self) -> u64 {
        match self {
            Availability::Available | Availability::Probe => 0,
            Availability::Unavailable { until_ms, .. } => *until_ms,
        }
    }

    fn rank(&self) -> (u8, u64) {
        match self {
            Availability::Available => (0, 0),
            Availability::Probe => (1, 0),
            Availability::Unavailable { until_ms, .. } => (2, *until_ms),
        }
    }
}

/// The best of several targets: an available one, else a probe-able one, else the one that
/// recovers soonest. Ties keep the first (the configured order). `None` for no items.
pub fn soonest<T>(items: impl IntoIterator<Item = (T, Availability)>) -> Option<(T, Availability)> {
    items.into_iter().min_by_key(|(_, a)| a.rank())
}

/// The result of [`TargetHealth::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted as started; `probe` when this request is the half-open probe.
    Admitted {
        probe: bool,
    },
    Refused {
        until_ms: u64,
        reason: Unhealthy,
    },
}

/// Everything known about one target. Counters saturate; `Default` is a fresh target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetHealth {
    /// Requests started.
    pub requests: u64,
    pub successes: u64,
    pub failures_5xx: u64,
    pub failures_429: u64,
    pub failures_connect: u64,
    pub failures_timeout: u64,
    /// Requests the client abandoned.
    pub cancelled: u64,
    /// Times the circuit opened.
    pub cooldowns: u64,
    pub consecutive_failures: u32,
    pub in_flight: u32,
    /// Latency of successful requests (ms).
    pub latency: Ewma,
    /// Time to first byte of successful requests (ms).
    pub ttfb: Ewma,
    pub circuit: Circuit,
    /// Skipped until this moment (epoch ms; 0: never cooled down).
    pub cooldown_until_ms: u64,
    /// When the current probe was claimed (meaningful in `HalfOpen`).
    pub probe_started_ms: u64,
    /// Finished requests and failures, for the failure rate (policy's window).
    pub recent: Window,
    /// Started requests and tokens, for the budgets (one minute).
    pub budget: Window,
}

impl TargetHealth {
    /// Whether the target may take a request at `now_ms`.
    pub fn availability(
        &self,
        now_ms: u64,
        policy: &HealthPolicy,
        budget: &Budget,
    ) -> Availability {
        if now_ms < self.cooldown_until_ms {
            let reason = if self.circuit == Circuit::Closed {
                Unhealthy::RateLimited
            } else {
                Unhealthy::CoolingDown
            };
            return Availability::Unavailable {
                until_ms: self.cooldown_until_ms,
                reason,
            };
        }
        if let Some(until_ms) = self.budget_recovery_ms(now_ms, budget) {
            return Availability::Unavailable {
                until_ms,
                reason: Unhealthy::OverBudget,
            };
        }
        match self.circuit {
            Circuit::Closed => Availability::Available,
            Circuit::Open => Availability::Probe,
            Circuit::HalfOpen => {
                let until_ms = self
                    .probe_started_ms
                    .saturating_add(policy.probe_timeout_ms);
                if now_ms < until_ms {
                    Availability::Unavailable {
                        until_ms,
                        reason: Unhealthy::ProbeInFlight,
                    }
                } else {
                    Availability::Probe
                }
            }
        }
    }

    /// When the target is back within its budgets, `None` when it is within them now.
    pub fn budget_recovery_ms(&self, now_ms: u64, budget: &Budget) -> Option<u64> {
        let rpm = budget.rpm.and_then(|limit| {
            self.budget
                .recovery_ms(now_ms, BUDGET_BUCKET_MS, Field::Requests, u64::from(limit))
        });
        let tpm = budget.tpm.and_then(|limit| {
            self.budget
                .recovery_ms(now_ms, BUDGET_BUCKET_MS, Field::Tokens, limit)
        });
        match (rpm, tpm) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Makes this request the half-open probe if one may go now: true for the one caller that
    /// wins (run it inside a shared-data update so that only one worker does).
    pub fn try_claim_probe(&mut self, now_ms: u64, policy: &HealthPolicy, budget: &Budget) -> bool {
        if self.availability(now_ms, policy, budget) != Availability::Probe {
            return false;
        }
        self.circuit = Circuit::HalfOpen;
        self.probe_started_ms = now_ms;
        true
    }

    /// A request goes to this target: counts it (and `tokens`, the prompt estimate, against
    /// the budget). Call it whether or not the target was available (the "recovers soonest"
    /// fallback sends traffic to unavailable targets too).
    pub fn on_start(&mut self, now_ms: u64, tokens: u64) {
        self.requests = self.requests.saturating_add(1);
        self.in_flight = self.in_flight.saturating_add(1);
        self.budget.record(now_ms, BUDGET_BUCKET_MS, 1, 0, tokens);
    }

    /// Availability check, probe claim and [`TargetHealth::on_start`] in one step, for one
    /// shared-data update.
    pub fn admit(
        &mut self,
        now_ms: u64,
        policy: &HealthPolicy,
        budget: &Budget,
        tokens: u64,
    ) -> Admission {
        let probe = match self.availability(now_ms, policy, budget) {
            Availability::Available => false,
            Availability::Probe => self.try_claim_probe(now_ms, policy, budget),
            Availability::Unavailable { until_ms, reason } => {
                return Admission::Refused { until_ms, reason }
            }
        };
        self.on_start(now_ms, tokens);
        Admission::Admitted { probe }
    }

    /// A request to this target ended. `probe`: it was admitted as the half-open probe.
    pub fn on_finish(&mut self, outcome: Outcome, probe: bool, now_ms: u64, policy: &HealthPolicy) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let bucket_ms = policy.failure_bucket_ms();
        match outcome {
            Outcome::Success {
                latency_ms,
                ttfb_ms,
                tokens,
            } => {
                self.successes = self.successes.saturating_add(1);
                self.latency.update(latency_ms, policy.alpha);
                if let Some(t) = ttfb_ms {
                    self.ttfb.update(t, policy.alpha);
                }
                if tokens > 0 {
                    self.budget.record(now_ms, BUDGET_BUCKET_MS, 0, 0, tokens);
                }
                self.consecutive_failures = 0;
                self.recent.record(now_ms, bucket_ms, 1, 0, 0);
                if probe {
                    self.resolve_probe(true, now_ms, policy);
                }
            }
            Outcome::Cancelled => {
                self.cancelled = self.cancelled.saturating_add(1);
                if probe && self.circuit == Circuit::HalfOpen {
                    // Nothing learnt: let the next request probe right away.
                    self.circuit = Circuit::Open;
                }
            }
            Outcome::RateLimited {
                until_ms: Some(until),
            } => {
                self.failures_429 = self.failures_429.saturating_add(1);
                self.rate_limited_until(until, now_ms, policy);
                if probe && self.circuit != Circuit::Closed {
                    // Alive but limited: probe again once the limit resets.
                    self.circuit = Circuit::Open;
                }
            }
            Outcome::Status5xx
            | Outcome::RateLimited { until_ms: None }
            | Outcome::ConnectFailure
            | Outcome::Timeout => {
                let counter = match outcome {
                    Outcome::Status5xx => &mut self.failures_5xx,
                    Outcome::ConnectFailure => &mut self.failures_connect,
                    Outcome::Timeout => &mut self.failures_timeout,
                    _ => &mut self.failures_429,
                };
                *counter = counter.saturating_add(1);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.recent.record(now_ms, bucket_ms, 1, 1, 0);
                if probe {
                    self.resolve_probe(false, now_ms, policy);
                } else if self.circuit == Circuit::Closed && self.should_trip(now_ms, policy) {
                    self.trip(now_ms, policy);
                }
            }
        }
    }

    /// The probe's verdict (also usable as soon as the probe's response headers arrive):
    /// success closes the circuit, failure opens it for a new cooldown. No effect when the
    /// circuit is already closed.
    pub fn resolve_probe(&mut self, success: bool, now_ms: u64, policy: &HealthPolicy) {
        if self.circuit == Circuit::Closed {
            return;
        }
        if success {
            self.circuit = Circuit::Closed;
            self.consecutive_failures = 0;
            self.recent.clear();
        } else {
            self.trip(now_ms, policy);
        }
    }

    /// The provider said to come back at `until_ms` (capped by the policy): skip the target
    /// until then. Never shortens a cooldown already in force.
    pub fn rate_limited_until(&mut self, until_ms: u64, now_ms: u64, policy: &HealthPolicy) {
        let until = until_ms.min(now_ms.saturating_add(policy.max_rate_limit_cooldown_ms));
        self.cooldown_until_ms = self.cooldown_until_ms.max(until);
    }

    /// Latency average in ms, for `lowest_latency`.
    pub fn latency_ms(&self) -> Option<u64> {
        self.latency.get()
    }

    /// Time-to-first-byte average in ms.
    pub fn ttfb_ms(&self) -> Option<u64> {
        self.ttfb.get()
    }

    /// All failures, by any class.
    pub fn failures(&self) -> u64 {
        self.failures_5xx
            .saturating_add(self.failures_429)
            .saturating_add(self.failures_connect)
            .saturating_add(self.failures_timeout)
    }

    fn should_trip(&self, now_ms: u64, policy: &HealthPolicy) -> bool {
        if self.consecutive_failures > policy.allowed_fails {
            return true;
        }
        let Some(threshold) = policy.failure_rate_threshold else {
            return false;
        };
        let t = self.recent.totals(now_ms, policy.failure_bucket_ms());
        t.requests >= u64::from(policy.min_requests.max(1))
            && t.failures as f64 >= threshold * t.requests as f64
    }

    fn trip(&mut self, now_ms: u64, policy: &HealthPolicy) {
        self.circuit = Circuit::Open;
        self.cooldowns = self.cooldowns.saturating_add(1);
        self.cooldown_until_ms = self
            .cooldown_until_ms
            .max(now_ms.saturating_add(policy.cooldown_ms));
        // The next verdict starts from a clean slate, so old failures cannot re-trip it.
        self.recent.clear();
    }
}
