//! The names of the router's stats: kinds, scopes, stats and their suffixes, label
//! sanitizing, and the `stats_tags` regexes that turn labels into Prometheus labels. Pure
//! functions and constants, no host calls: what [`Metrics`](super::Metrics) defines, and what
//! the bootstrap's `stats_config` and the tests match against.

use crate::health::Outcome;

/// Envoy metric kinds (the proxy-wasm `MetricType` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Failure classes, as counted by the health board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Status5xx,
    Status429,
    Connect,
    Timeout,
}

impl FailureClass {
    pub const ALL: [FailureClass; 4] = [
        FailureClass::Status5xx,
        FailureClass::Status429,
        FailureClass::Connect,
        FailureClass::Timeout,
    ];

    /// The value of the `class` label.
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Status5xx => "5xx",
            FailureClass::Status429 => "429",
            FailureClass::Connect => "connect",
            FailureClass::Timeout => "timeout",
        }
    }

    /// The class of a finished request; `None` for a success or a cancelled request.
    pub fn of(outcome: &Outcome) -> Option<FailureClass> {
        match outcome {
            Outcome::Status5xx => Some(FailureClass::Status5xx),
            Outcome::RateLimited { .. } => Some(FailureClass::Status429),
            Outcome::ConnectFailure => Some(FailureClass::Connect),
            Outcome::Timeout => Some(FailureClass::Timeout),
            Outcome::Success { .. } | Outcome::Cancelled => None,
        }
    }
}

/// The two kinds of scope: which Prometheus label a stat carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Target,
    Rule,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Target => "target",
            Scope::Rule => "rule",
        }
    }
}

/// The stats of one scope (see the table in the [`metrics`](crate::metrics) module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Requests,
    Failures(FailureClass),
    /// Targets only.
    Cooldowns,
    Failovers,
    BudgetSkips,
    InFlight,
    LatencyMs,
    TtfbMs,
    PromptTokens,
    CompletionTokens,
    /// Only scopes with a price.
    CostMicroUsd,
}

/// How many stats a scope has at most.
pub const STATS_PER_SCOPE: usize = 14;

impl Stat {
    /// Every stat, in slot order.
    pub const ALL: [Stat; STATS_PER_SCOPE] = [
        Stat::Requests,
        Stat::Failures(FailureClass::Status5xx),
        Stat::Failures(FailureClass::Status429),
        Stat::Failures(FailureClass::Connect),
        Stat::Failures(FailureClass::Timeout),
        Stat::Cooldowns,
        Stat::Failovers,
        Stat::BudgetSkips,
        Stat::InFlight,
        Stat::LatencyMs,
        Stat::TtfbMs,
        Stat::PromptTokens,
        Stat::CompletionTokens,
        Stat::CostMicroUsd,
    ];

    /// The last part of the stat name.
    pub fn suffix(self) -> &'static str {
        match self {
            Stat::Requests => "requests",
            Stat::Failures(FailureClass::Status5xx) => "failures.5xx",
            Stat::Failures(FailureClass::Status429) => "failures.429",
            Stat::Failures(FailureClass::Connect) => "failures.connect",
            Stat::Failures(FailureClass::Timeout) => "failures.timeout",
            Stat::Cooldowns => "cooldowns",
            Stat::Failovers => "failovers",
            Stat::BudgetSkips => "budget_skips",
            Stat::InFlight => "in_flight",
            Stat::LatencyMs => "latency_ms",
            Stat::TtfbMs => "ttfb_ms",
            Stat::PromptTokens => "prompt_tokens",
            Stat::CompletionTokens => "completion_tokens",
            Stat::CostMicroUsd => "cost_micro_usd",
        }
    }

    pub fn kind(self) -> MetricKind {
        match self {
            Stat::InFlight => MetricKind::Gauge,
            Stat::LatencyMs | Stat::TtfbMs => MetricKind::Histogram,
            _ => MetricKind::Counter,
        }
    }

    /// Index into [`Stat::ALL`].
    pub(super) fn slot(self) -> usize {
        match self {
            Stat::Requests => 0,
            Stat::Failures(FailureClass::Status5xx) => 1,
            Stat::Failures(FailureClass::Status429) => 2,
            Stat::Failures(FailureClass::Connect) => 3,
            Stat::Failures(FailureClass::Timeout) => 4,
            Stat::Cooldowns => 5,
            Stat::Failovers => 6,
            Stat::BudgetSkips => 7,
            Stat::InFlight => 8,
            Stat::LatencyMs => 9,
            Stat::TtfbMs => 10,
            Stat::PromptTokens => 11,
            Stat::CompletionTokens => 12,
            Stat::CostMicroUsd => 13,
        }
    }
}

/// First segment of every stat name (Envoy adds `wasmcustom.` in front).
pub const PREFIX: &str = "llm_router";

/// Longest label kept in a stat name, in bytes (before a collision suffix).
pub const MAX_LABEL_BYTES: usize = 160;

/// Prometheus label names, the `tag_name`s of the `stats_tags` entries.
pub const TAG_TARGET: &str = "target";
pub const TAG_RULE: &str = "rule";
pub const TAG_CLASS: &str = "class";

/// Every stat suffix, as a regex alternation (a macro so that `concat!` can use it).
macro_rules! stat_suffixes {
    () => {
        "requests|failures\\.(?:5xx|429|connect|timeout)|cooldowns|failovers|budget_skips|in_flight|latency_ms|ttfb_ms|prompt_tokens|completion_tokens|cost_micro_usd|capability_skips\\.(?:context_window|max_output_tokens|vision|tools|json_output|structured_outputs|streaming)"
    };
}

/// `stats_tags` regex of the `target` label. As Envoy requires, the first group is what is
/// removed from the name (the label and its dot), the second the value. The stat suffix is
/// anchored, so labels with dots (`openai/gpt-4.1`) are found whole. Valid for Envoy's
/// std::regex and RE2 extractors alike (no look-around).
pub const TAG_REGEX_TARGET: &str = concat!(
    "^wasmcustom\\.llm_router\\.target\\.((.+?)\\.)(?:",
    stat_suffixes!(),
    ")$"
);

/// `stats_tags` regex of the `rule` label.
pub const TAG_REGEX_RULE: &str = concat!(
    "^wasmcustom\\.llm_router\\.rule\\.((.+?)\\.)(?:",
    stat_suffixes!(),
    ")$"
);

/// `stats_tags` regex of the `class` label of the failure counters.
pub const TAG_REGEX_CLASS: &str =
    "^wasmcustom\\.llm_router\\.(?:target|rule)\\..+\\.failures(\\.(5xx|429|connect|timeout))$";

/// A label made safe for a stat name (see the [`metrics`](crate::metrics) module docs).
pub fn label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_LABEL_BYTES));
    let bytes = raw.as_bytes();
    let len = bytes.len().min(MAX_LABEL_BYTES);
    for (i, &b) in bytes.iter().take(len).enumerate() {
        let c = match b {
            // Dots separate Envoy name segments: none empty.
            b'.' if i == 0 || i + 1 == len || out.ends_with('.') => '_',
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b':'
            | b'/'
            | b'@'
            | b'*' => char::from(b),
            _ => '_',
        };
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The full stat name (without Envoy's `wasmcustom.`) of an already sanitized label.
pub fn stat_name(scope: Scope, label: &str, stat: Stat) -> String {
    format!("{PREFIX}.{}.{label}.{}", scope.name(), stat.suffix())
}
