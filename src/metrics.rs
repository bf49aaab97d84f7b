//! Envoy stats of the router, per target and per rule: defined once per configuration,
//! updated per request by metric id only.
//!
//! # Names
//!
//! Every stat the filter defines is named `llm_router.<scope>.<label>.<stat>`:
//!
//! * `<scope>` is `target` or `rule`;
//! * `<label>` ([`label`]) is, for a target, `<upstream>/<model>` of a configured target, or
//!   `<upstream>/*` for every model passed through to the `passthrough_upstream`; for a rule,
//!   what the `x-llm-router-rule` header says: `rule:<name>`, `model:<alias>`, `default` or
//!   `passthrough`;
//! * `<stat>` is one of ([`Stat`]):
//!
//! | stat | kind | scopes | meaning |
//! |---|---|---|---|
//! | `requests` | counter | both | requests (or failover attempts) sent to the target; for a rule, its requests ([`Metrics::request_started`]) |
//! | `failures.5xx`, `failures.429`, `failures.connect`, `failures.timeout` | counter | both | failed requests by class |
//! | `cooldowns` | counter | target | times the target was taken out of rotation (circuit opened, or a rate-limit cooldown began) |
//! | `failovers` | counter | both | times a request or attempt left the target for a later candidate |
//! | `budget_skips` | counter | both | times the target was passed over because it was out of its rpm / tpm budget |
//! | `in_flight` | gauge | both | requests started and not finished |
//! | `latency_ms` | histogram | both | time from routing to the end of the response |
//! | `ttfb_ms` | histogram | both | time from routing to the response headers |
//! | `prompt_tokens`, `completion_tokens` | counter | both | tokens of finished requests |
//! | `cost_micro_usd` | counter | priced | estimated cost, micro-dollars ([`cost_micro_usd`]); only targets with a `price`, and rules with at least one |
//! | `capability_skips.<reason>` | counter | target | requests that skipped the target for lacking a capability ([`skips`]) |
//!
//! Envoy prefixes stats defined by a proxy-wasm module with its custom namespace:
//! `/stats` shows `wasmcustom.llm_router.target.openai/gpt-4o.requests`. Its Prometheus
//! output (`/stats/prometheus`) strips the `wasmcustom.` namespace again, adds no `envoy_`
//! prefix and no `_total` suffix, and replaces every character outside `[a-zA-Z0-9_]` of the
//! *tag-extracted* name with `_`. With the three `stats_config.stats_tags` entries
//! ([`TAG_REGEX_TARGET`], [`TAG_REGEX_RULE`], [`TAG_REGEX_CLASS`], tag names [`TAG_TARGET`],
//! [`TAG_RULE`], [`TAG_CLASS`]) in the bootstrap, label and failure class become Prometheus
//! labels:
//!
//! | Envoy stat (after `wasmcustom.`) | Prometheus |
//! |---|---|
//! | `llm_router.target.<t>.requests` | `llm_router_target_requests{target="<t>"}` |
//! | `llm_router.target.<t>.failures.<class>` | `llm_router_target_failures{target="<t>",class="<class>"}` |
//! | `llm_router.target.<t>.in_flight` | `llm_router_target_in_flight{target="<t>"}` (gauge) |
//! | `llm_router.target.<t>.latency_ms` | `llm_router_target_latency_ms_bucket{target="<t>",le="..."}`, `_sum`, `_count` |
//! | `llm_router.rule.<r>.<stat>` | `llm_router_rule_<stat>{rule="<r>"}` (failures: `llm_router_rule_failures{rule="<r>",class="<class>"}`) |
//!
//! and so on for every stat (`llm_router_target_cooldowns`, `..._failovers`,
//! `..._budget_skips`, `..._ttfb_ms`, `..._prompt_tokens`, `..._completion_tokens`,
//! `..._cost_micro_usd`). Without those `stats_tags` the stats are still there, with the label
//! folded into the name (`llm_router_target_openai_gpt_4o_requests`).
//!
//! # Cardinality
//!
//! Only configured targets, the passthrough upstream (one `<upstream>/*` scope, whatever
//! model clients send) and configured rules, aliases, the default and `passthrough` get
//! stats: a fixed set per configuration, at most 14 per scope (and 7 capability-skip counters
//! per target). Nothing is defined per request; a request whose target or rule has no scope
//! counts nowhere.
//!
//! Labels are sanitized ([`label`]): bytes outside `A-Z a-z 0-9 - _ . : / @ *` become `_`
//! (so no `"` or `\` ever reaches a Prometheus label value), a dot never starts or ends a
//! label nor follows another (Envoy splits names at dots), the length is capped at
//! [`MAX_LABEL_BYTES`], and when two scopes of the same kind end up with the same label the
//! later one gets a suffix `_2`, `_3`, ... (e.g. upstream `a/b` with model `c` and upstream
//! `a` with model `b/c`).
//!
//! # Per request
//!
//! Names are built and stats defined only in `on_configure` ([`Metrics::define`]). A request
//! resolves its [`Scopes`] once ([`Metrics::scopes`], two hash lookups by the health key and
//! the routing source it already has) and then only passes metric ids to the host. Host
//! errors are logged at debug level and ignored: stats never fail a request.
//!
//! ```text
//! // on_configure, after the plan compiled (ids are per VM; keep them next to the plan):
//! let metrics = Rc::new(Metrics::define(&plan, &mut host));
//! // Per target, where a request or failover attempt is tracked (track.rs, both flows):
//! let at = metrics.target(&key);
//! metrics.request_started(host, at);                      // admitted and sent
//! metrics.request_finished(host, at, &Finish { prompt_tokens, completion_tokens,
//!     ..Finish::from_outcome(&outcome) });                 // once, with the health outcome
//! metrics.cooldown_entered(host, at);                     // the circuit opened / rate limited
//! metrics.failover(host, metrics.scopes(&left, &source)); // left this target for the next
//! metrics.budget_skip(host, metrics.scopes(&skipped, &source));
//! // Per client request, in the request flow (the served target prices the cost):
//! metrics.request_started(host, metrics.scopes(&first, &source).rule_only());
//! metrics.request_finished(host, metrics.scopes(&served, &source).rule_only(), &end);
//! ```
//!
//! Every VM of the filter (main thread and each worker) defines the same names: Envoy keeps
//! one stat per name, so the counts of all workers add up.
//!
//! This file holds the per-request side ([`Metrics`], [`Scopes`], [`Finish`]); the stat
//! names, label sanitizing and `stats_tags` regexes are in `names.rs`, the capability-skip
//! counters in `skips.rs`, the batched deltas in `pending.rs`.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

mod names;
pub mod pending;
pub mod skips;

use crate::clients::ClientStats;
use crate::config::plan::{Action, Plan, Price};
use crate::config::raw::UnknownModel;
use crate::health::{HealthBoard, Outcome};
use crate::host::Host;
use crate::ratelimit::stats::ServiceStats;
pub use names::{
    label, stat_name, FailureClass, MetricKind, Scope, Stat, MAX_LABEL_BYTES, PREFIX,
    STATS_PER_SCOPE, TAG_CLASS, TAG_REGEX_CLASS, TAG_REGEX_RULE, TAG_REGEX_TARGET, TAG_RULE,
    TAG_TARGET,
};
pub use pending::Pending;

/// Estimated cost in micro-dollars. Prices are dollars per one million tokens, which is
/// micro-dollars per token. Rounded to the nearest micro-dollar; 0 for nothing to count.
pub fn cost_micro_usd(
    price: &Price,
    prompt_tokens: u64,
    cached: u64,
    completion_tokens: u64,
) -> u64 {
    let cost = price.micro_cost(prompt_tokens, cached, completion_tokens);
    if cost.is_finite() && cost > 0.0 {
        // `as` saturates at u64::MAX.
        cost.round() as u64
    } else {
        0
    }
}

/// Where a request counts: its target and its rule ([`Metrics::scopes`]). `Default` counts
/// nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    /// The target: counted in unless `rule_only`, and its price prices the cost.
    target: Option<usize>,
    rule: Option<usize>,
    rule_only: bool,
}

impl Scopes {
    /// Counts in the target only (e.g. per failover attempt, when the request flow counts
    /// the rule once per request).
    pub fn target_only(self) -> Scopes {
        Scopes { rule: None, ..self }
    }

    /// Counts in the rule only; the target still prices the cost.
    pub fn rule_only(self) -> Scopes {
        Scopes {
            rule_only: true,
            ..self
        }
    }

    /// Whether the request counts in any scope.
    pub fn is_empty(&self) -> bool {
        self.counted_target().is_none() && self.rule.is_none()
    }

    fn counted_target(&self) -> Option<usize> {
        self.target.filter(|_| !self.rule_only)
    }
}

/// How a request ended, for [`Metrics::request_finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Finish {
    /// `None`: answered (or cancelled).
    pub failure: Option<FailureClass>,
    pub latency_ms: Option<u64>,
    pub ttfb_ms: Option<u64>,
    /// The provider's `usage`, else the estimate; 0 when unknown.
    pub prompt_tokens: u64,
    /// The provider's `usage`; 0 when unknown.
    pub completion_tokens: u64,
    /// Prompt tokens the provider read from its cache (priced at `cached_input`).
    pub cached_tokens: u64,
}

impl Finish {
    /// Class, latency and time to first byte of a health outcome (tokens left at 0).
    pub fn from_outcome(outcome: &Outcome) -> Finish {
        let (latency_ms, ttfb_ms) = match outcome {
            Outcome::Success {
                latency_ms,
                ttfb_ms,
                ..
            } => (Some(*latency_ms), *ttfb_ms),
            _ => (None, None),
        };
        Finish {
            failure: FailureClass::of(outcome),
            latency_ms,
            ttfb_ms,
            ..Finish::default()
        }
    }
}

/// The metric ids of one scope, by [`Stat`] slot; `None` where the scope has no such stat
/// or defining it failed.
#[derive(Debug, Clone, PartialEq)]
struct ScopeIds {
    label: String,
    ids: [Option<u32>; STATS_PER_SCOPE],
    /// Targets: the price for the cost stat.
    price: Option<Price>,
}

impl ScopeIds {
    fn id(&self, stat: Stat) -> Option<u32> {
        self.ids.get(stat.slot()).copied().flatten()
    }
}

/// A scope of a plan, before its stats are defined.
#[derive(Debug)]
struct ScopeSpec {
    scope: Scope,
    /// Health key (targets) or routing source (rules): what a request looks it up by.
    key: String,
    raw_label: String,
    /// Targets: the price; rules: `Some` when one of their targets has a price.
    price: Option<Price>,
}

impl ScopeSpec {
    fn has(&self, stat: Stat) -> bool {
        match stat {
            Stat::Cooldowns => self.scope == Scope::Target,
            Stat::CostMicroUsd => self.price.is_some(),
            _ => true,
        }
    }
}

/// The scopes of a plan in configuration order (rules, aliases by name, the default,
/// passthrough), each target once (first price seen).
fn scopes_of(plan: &Plan) -> Vec<ScopeSpec> {
    let mut aliases: Vec<(&String, &Action)> = plan.aliases.iter().collect();
    aliases.sort_by(|a, b| a.0.cmp(b.0));
    let mut actions: Vec<(String, &Action)> = Vec::new();
    actions.extend(
        plan.rules
            .iter()
            .map(|r| (format!("rule:{}", r.name), &r.action)),
    );
    actions.extend(
        aliases
            .into_iter()
            .map(|(a, act)| (format!("model:{a}"), act)),
    );
    if let Some(action) = &plan.default {
        actions.push(("default".to_owned(), action));
    }

    let mut targets: Vec<ScopeSpec> = Vec::new();
    let mut rules: Vec<ScopeSpec> = Vec::new();
    for (source, action) in actions {
        for t in &action.targets {
            match targets.iter_mut().find(|s| s.key == t.key) {
                Some(seen) => seen.price = seen.price.or(t.price),
                None => {
                    let upstream = plan.upstream(t.upstream).map_or("", |u| u.name.as_str());
                    targets.push(ScopeSpec {
                        scope: Scope::Target,
                        key: t.key.clone(),
                        raw_label: format!("{upstream}/{}", t.model),
                        price: t.price,
                    });
                }
            }
        }
        rules.push(ScopeSpec {
            scope: Scope::Rule,
            raw_label: source.clone(),
            key: source,
            price: action.targets.iter().find_map(|t| t.price),
        });
    }
    if plan.unknown_model == UnknownModel::Passthrough {
        if let Some(up) = plan.passthrough_upstream.and_then(|i| plan.upstream(i)) {
            targets.push(ScopeSpec {
                scope: Scope::Target,
                key: HealthBoard::passthrough_key(&up.name),
                raw_label: format!("{}/*", up.name),
                price: None,
            });
            rules.push(ScopeSpec {
                scope: Scope::Rule,
                key: "passthrough".to_owned(),
                raw_label: "passthrough".to_owned(),
                price: None,
            });
        }
    }
    targets.extend(rules);
    targets
}

/// `label(raw)`, with `_2`, `_3`, ... appended while it is taken.
fn unique_label(raw: &str, taken: &mut HashSet<String>) -> String {
    let base = label(raw);
    let mut candidate = base.clone();
    let mut n = 2u32;
    while taken.contains(&candidate) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// Every stat of one configuration, and the per-request calls that update them.
#[derive(Debug, Default)]
pub struct Metrics {
    targets: Vec<ScopeIds>,
    rules: Vec<ScopeIds>,
    target_index: HashMap<String, usize>,
    rule_index: HashMap<String, usize>,
    /// Per-client stats (`clients`).
    pub clients: ClientStats,
    /// Capability skips per target and reason (`skips.rs`).
    pub skips: skips::SkipStats,
    /// The rate-limit service's answers (`rate_limit_service`).
    pub limits_service: ServiceStats,
    /// The updates not yet handed to Envoy (shared with `clients` and `skips`).
    pending: Rc<Pending>,
}

impl Metrics {
    /// Defines the stats of every scope of `plan`. Call once per configuration in each VM
    /// (`on_configure`). A stat the host refuses is left out (one warning for all of them);
    /// the configuration never fails over stats.
    pub fn define(plan: &Plan, host: &mut dyn Host) -> Metrics {
        let mut m = Metrics::default();
        let mut taken_targets = HashSet::new();
        let mut taken_rules = HashSet::new();
        let mut failed = 0usize;
        let mut first_error: Option<String> = None;
        for spec in scopes_of(plan) {
            let taken = match spec.scope {
                Scope::Target => &mut taken_targets,
                Scope::Rule => &mut taken_rules,
            };
            let label = unique_label(&spec.raw_label, taken);
            let mut ids = [None; STATS_PER_SCOPE];
            for stat in Stat::ALL.into_iter().filter(|s| spec.has(*s)) {
                let name = stat_name(spec.scope, &label, stat);
                match host.define_metric(stat.kind(), &name) {
                    Ok(id) => {
                        if let Some(slot) = ids.get_mut(stat.slot()) {
                            *slot = Some(id);
                        }
                    }
                    Err(e) => {
                        log::debug!("llm-router: cannot define stat {name}: {e}");
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{name}: {e}"));
                    }
                }
            }
            let (list, index) = match spec.scope {
                Scope::Target => (&mut m.targets, &mut m.target_index),
                Scope::Rule => (&mut m.rules, &mut m.rule_index),
            };
            index.insert(spec.key, list.len());
            list.push(ScopeIds {
                label,
                ids,
                price: spec.price,
            });
        }
        if let Some(clients) = &plan.clients {
            m.clients = ClientStats::define(clients, host, Rc::clone(&m.pending));
        }
        // In configuration order, like the other stats.
        let mut by_index: Vec<(&usize, &String)> =
            m.target_index.iter().map(|(k, i)| (i, k)).collect();
        by_index.sort();
        let labels = by_index
            .into_iter()
            .filter_map(|(i, k)| Some((k.as_str(), m.targets.get(*i)?.label.as_str())));
        m.skips = skips::SkipStats::define(labels, host, Rc::clone(&m.pending));
        if plan.rate_limit_service.is_some() {
            m.limits_service = ServiceStats::define(host, Rc::clone(&m.pending));
        }
        if let Some(first) = first_error {
            log::warn!(
                "llm-router: {failed} stats could not be defined and are left out (first: {first})"
            );
        }
        m
    }

    /// The scopes of a request: its target by health key (`Candidate::key`) and its rule by
    /// routing source (`Decision::source`). Unknown ones count nowhere.
    pub fn scopes(&self, target_key: &str, rule_source: &str) -> Scopes {
        Scopes {
            target: self.target_index.get(target_key).copied(),
            rule: self.rule_index.get(rule_source).copied(),
            rule_only: false,
        }
    }

    /// The scope of a target alone, by health key: `scopes(key, _).target_only()`.
    pub fn target(&self, target_key: &str) -> Scopes {
        Scopes {
            target: self.target_index.get(target_key).copied(),
            rule: None,
            rule_only: false,
        }
    }

    /// The request was sent to its target: `requests` +1, `in_flight` +1. Pair with exactly
    /// one [`Metrics::request_finished`].
    pub fn request_started(&self, host: &mut dyn Host, at: Scopes) {
        self.add(host, at, Stat::Requests, 1);
        self.add(host, at, Stat::InFlight, 1);
    }

    /// The request started by [`Metrics::request_started`] ended (also when cancelled):
    /// `in_flight` -1, then its failure class, latency, time to first byte, tokens and, when
    /// the target has a price, cost.
    pub fn request_finished(&self, host: &mut dyn Host, at: Scopes, end: &Finish) {
        self.add(host, at, Stat::InFlight, -1);
        if let Some(class) = end.failure {
            self.add(host, at, Stat::Failures(class), 1);
        }
        if let Some(ms) = end.latency_ms {
            self.record(host, at, Stat::LatencyMs, ms);
        }
        if let Some(ms) = end.ttfb_ms {
            self.record(host, at, Stat::TtfbMs, ms);
        }
        self.add(
            host,
            at,
            Stat::PromptTokens,
            saturating_i64(end.prompt_tokens),
        );
        self.add(
            host,
            at,
            Stat::CompletionTokens,
            saturating_i64(end.completion_tokens),
        );
        if let Some(price) = self.target_price(at) {
            let cost = cost_micro_usd(
                &price,
                end.prompt_tokens,
                end.cached_tokens,
                end.completion_tokens,
            );
            self.add(host, at, Stat::CostMicroUsd, saturating_i64(cost));
        }
    }

    /// The target of `at` was taken out of rotation: its circuit opened, or a rate-limit
    /// cooldown began. Counts on the target only.
    pub fn cooldown_entered(&self, host: &mut dyn Host, at: Scopes) {
        self.add(host, at.target_only(), Stat::Cooldowns, 1);
    }

    /// A request left the target of `from` for a later candidate: passed over when admitted
    /// (cooling down, rate limited, its probe taken, over budget), or its failed attempt was
    /// retried on the next candidate. Once per target left.
    pub fn failover(&self, host: &mut dyn Host, from: Scopes) {
        self.add(host, from, Stat::Failovers, 1);
    }

    /// A request passed over the target of `at` because it was out of its rpm / tpm budget
    /// (in addition to [`Metrics::failover`] when the request went elsewhere).
    pub fn budget_skip(&self, host: &mut dyn Host, at: Scopes) {
        self.add(host, at, Stat::BudgetSkips, 1);
    }

    /// The label of a target in the stat names, by health key.
    pub fn target_label(&self, key: &str) -> Option<&str> {
        let i = self.target_index.get(key)?;
        self.targets.get(*i).map(|s| s.label.as_str())
    }

    /// The label of a rule in the stat names, by routing source.
    pub fn rule_label(&self, source: &str) -> Option<&str> {
        let i = self.rule_index.get(source)?;
        self.rules.get(*i).map(|s| s.label.as_str())
    }

    /// How many stats were defined.
    pub fn defined(&self) -> usize {
        let scoped: usize = self
            .targets
            .iter()
            .chain(&self.rules)
            .map(|s| s.ids.iter().flatten().count())
            .sum();
        scoped + self.skips.defined()
    }

    fn target_price(&self, at: Scopes) -> Option<Price> {
        at.target
            .and_then(|t| self.targets.get(t))
            .and_then(|s| s.price)
    }

    fn ids(&self, at: Scopes, stat: Stat) -> impl Iterator<Item = u32> + '_ {
        let target = at.counted_target().and_then(|t| self.targets.get(t));
        let rule = at.rule.and_then(|r| self.rules.get(r));
        [target, rule]
            .into_iter()
            .flatten()
            .filter_map(move |s| s.id(stat))
    }

    /// Adds `delta` to a counter (delta > 0) or gauge of both scopes (held until the flush).
    fn add(&self, _host: &mut dyn Host, at: Scopes, stat: Stat, delta: i64) {
        for id in self.ids(at, stat) {
            self.pending.add(id, delta);
        }
    }

    /// Records a histogram sample in both scopes (held until the flush).
    fn record(&self, host: &mut dyn Host, at: Scopes, stat: Stat, value: u64) {
        for id in self.ids(at, stat) {
            self.pending.record(host, id, value);
        }
    }

    /// Hands the held updates to Envoy (the root context's tick); returns the host calls.
    pub fn flush(&self, host: &mut dyn Host) -> usize {
        self.pending.flush(host)
    }
}

/// A count as a metric delta (deltas are `i64`).
pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
