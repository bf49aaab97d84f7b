//! The limit definitions a rate-limit service needs for the router's descriptors
//! ([`super::checks`]), made from the compiled plan so that they cannot drift from it:
//! Limitador's limits file and envoyproxy/ratelimit's configuration (`llm-router-limits`,
//! `make limits`). Both are YAML; strings are written double-quoted (JSON escapes are YAML's).

use std::fmt::Write as _;

use super::checks::LimitKind;
use crate::config::plan::Plan;
use crate::health::board::KEY_PREFIX;

/// A month's budget counter must outlast the month (the month is in its descriptor).
pub const BUDGET_WINDOW_SECONDS: u64 = 32 * 24 * 3600;

/// One limit of the plan: its kind, whose (client name or target `upstream/model`), the
/// maximum per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub kind: LimitKind,
    pub subject: String,
    pub max: u64,
}

/// Every limit the plan counts at the service, clients first, in configuration order.
pub fn definitions(plan: &Plan) -> Vec<Definition> {
    let mut out = Vec::new();
    for c in plan.clients.iter().flat_map(|c| c.clients.iter()) {
        let limits = [
            (LimitKind::ClientRequests, c.limits.rpm.map(u64::from)),
            (LimitKind::ClientTokens, c.limits.tpm),
            (LimitKind::ClientBudget, c.limits.monthly_budget_micro),
        ];
        for (kind, max) in limits {
            if let Some(max) = max {
                out.push(Definition {
                    kind,
                    subject: c.name.clone(),
                    max,
                });
            }
        }
    }
    let Some(service) = &plan.rate_limit_service else {
        return out;
    };
    let mut targets: Vec<(&String, _)> = service.target_budgets.iter().collect();
    targets.sort_by(|a, b| a.0.cmp(b.0));
    for (key, budget) in targets {
        let subject = key.strip_prefix(KEY_PREFIX).unwrap_or(key).to_owned();
        let limits = [
            (LimitKind::TargetRequests, budget.rpm.map(u64::from)),
            (LimitKind::TargetTokens, budget.tpm),
        ];
        for (kind, max) in limits {
            if let Some(max) = max {
                let subject = subject.clone();
                out.push(Definition { kind, subject, max });
            }
        }
    }
    out
}

fn subject_key(kind: LimitKind) -> &'static str {
    if kind.is_client() {
        "client"
    } else {
        "target"
    }
}

fn window_seconds(kind: LimitKind) -> u64 {
    match kind {
        LimitKind::ClientBudget => BUDGET_WINDOW_SECONDS,
        _ => 60,
    }
}

/// A YAML (and JSON) double-quoted string.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A CEL single-quoted string literal.
fn cel(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        if matches!(ch, '\\' | '\'') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

/// The service's domain of the plan's descriptors.
fn domain_of(plan: &Plan) -> &str {
    plan.rate_limit_service
        .as_ref()
        .map_or(super::DEFAULT_DOMAIN, |s| s.domain.as_str())
}

/// Limitador's limits file: one limit per definition in namespace `domain`, matched on the
/// descriptor's entries; a budget's counter is per `month`.
pub fn limitador(plan: &Plan) -> String {
    let domain = domain_of(plan);
    let defs = definitions(plan);
    if defs.is_empty() {
        return "[]\n".to_owned();
    }
    let mut out = String::new();
    for d in defs {
        let kind = d.kind.name();
        let key = subject_key(d.kind);
        let conditions = [
            format!("descriptors[0].limit == {}", cel(kind)),
            format!("descriptors[0].{key} == {}", cel(&d.subject)),
        ];
        let variables = if d.kind == LimitKind::ClientBudget {
            "[\"descriptors[0].month\"]"
        } else {
            "[]"
        };
        let _ = write!(
            out,
            "- namespace: {}\n  name: {}\n  max_value: {}\n  seconds: {}\n  conditions:\n    - {}\n    - {}\n  variables: {variables}\n",
            quoted(domain),
            quoted(&format!("{key} {} {kind}", d.subject)),
            d.max,
            window_seconds(d.kind),
            quoted(&conditions[0]),
            quoted(&conditions[1]),
        );
    }
    out
}

/// envoyproxy/ratelimit's configuration for `domain`: per kind (one node each: keys must be
/// unique at each level), per subject, a limit per minute; a budget per `month` value with
/// the unit `year` (the month in the descriptor starts each calendar month afresh; the
/// yearly window only has to outlast it).
pub fn envoy_ratelimit(plan: &Plan) -> String {
    let domain = domain_of(plan);
    let defs = definitions(plan);
    if defs.is_empty() {
        return format!("domain: {}\ndescriptors: []\n", quoted(domain));
    }
    let mut out = format!("domain: {}\ndescriptors:\n", quoted(domain));
    let mut kinds: Vec<LimitKind> = Vec::new();
    for d in &defs {
        if !kinds.contains(&d.kind) {
            kinds.push(d.kind);
        }
    }
    for kind in kinds {
        let _ = write!(
            out,
            "  - key: limit\n    value: {}\n    descriptors:\n",
            quoted(kind.name())
        );
        for d in defs.iter().filter(|d| d.kind == kind) {
            let key = subject_key(kind);
            let _ = writeln!(
                out,
                "      - key: {key}\n        value: {}",
                quoted(&d.subject)
            );
            if kind == LimitKind::ClientBudget {
                let _ = write!(
                    out,
                    "        descriptors:\n          - key: month\n            rate_limit: {{unit: year, requests_per_unit: {}}}\n",
                    d.max
                );
            } else {
                let _ = writeln!(
                    out,
                    "        rate_limit: {{unit: minute, requests_per_unit: {}}}",
                    d.max
                );
            }
        }
    }
    out
}
