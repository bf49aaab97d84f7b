//! What a request asks of the rate-limit service. Each limit is its own call with one
//! descriptor, because a call has one `hits_addend` for all its descriptors (Limitador reads
//! no per-descriptor one) and each limit is charged its own amount:
//!
//! | limit | descriptor entries | hits at admission | hits at the end |
//! |---|---|---|---|
//! | client `rpm` | `limit=client_rpm`, `client=<name>` | 1 | — |
//! | client `tpm` | `limit=client_tpm`, `client=<name>` | prompt estimate | tokens beyond it |
//! | client `monthly_budget` | `limit=client_budget`, `client=<name>`, `month=<YYYY-MM>` | estimated prompt cost | the rest of the cost |
//! | target `budget.rpm` | `limit=target_rpm`, `target=<upstream/model>` | 1 | — |
//! | target `budget.tpm` | `limit=target_tpm`, `target=<upstream/model>` | prompt estimate | tokens beyond it |
//!
//! Spend is in millionths of the price currency. The calendar month is in the budget's
//! descriptor, so each month is a counter of its own (its window only has to outlast the
//! month). A service counts at least one hit per call (`hits_addend` 0 means 1), so an
//! admission is charged at least 1.

use prost::Message;

use super::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use crate::calendar::month_index;
use crate::clients::Limits;
use crate::health::Budget;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    ClientRequests,
    ClientTokens,
    ClientBudget,
    TargetRequests,
    TargetTokens,
}

impl LimitKind {
    /// The value of the descriptor's `limit` entry.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::ClientRequests => "client_rpm",
            LimitKind::ClientTokens => "client_tpm",
            LimitKind::ClientBudget => "client_budget",
            LimitKind::TargetRequests => "target_rpm",
            LimitKind::TargetTokens => "target_tpm",
        }
    }

    pub fn is_client(self) -> bool {
        matches!(
            self,
            LimitKind::ClientRequests | LimitKind::ClientTokens | LimitKind::ClientBudget
        )
    }
}

/// One call to the service: which limit, and the serialized request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: LimitKind,
    pub hits: u32,
    pub message: Vec<u8>,
}

/// Who a request counts against, and how much.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// The client's name and limits, when the request has a configured client.
    pub client: Option<(&'a str, &'a Limits)>,
    /// The target's health-board key (`upstream/model`) and budget.
    pub target: Option<(&'a str, &'a Budget)>,
    pub now_ms: u64,
}

/// The calls of an admission: `tokens` is the prompt estimate, `cost_micro` its cost.
pub fn admission(domain: &str, charge: &Charge, tokens: u64, cost_micro: u64) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some((name, limits)) = charge.client {
        if limits.rpm.is_some() {
            out.push(client(domain, LimitKind::ClientRequests, name, None, 1));
        }
        if limits.tpm.is_some() {
            out.push(client(domain, LimitKind::ClientTokens, name, None, tokens));
        }
        if limits.monthly_budget_micro.is_some() {
            let month = month_label(charge.now_ms);
            let kind = LimitKind::ClientBudget;
            out.push(client(domain, kind, name, Some(&month), cost_micro));
        }
    }
    if let Some((key, budget)) = charge.target {
        if budget.rpm.is_some() {
            out.push(target(domain, LimitKind::TargetRequests, key, 1));
        }
        if budget.tpm.is_some() {
            out.push(target(domain, LimitKind::TargetTokens, key, tokens));
        }
    }
    out
}

/// The calls of a request's end: the tokens beyond those charged at admission and the cost
/// beyond the estimate charged (nothing is sent for a limit with nothing to add).
pub fn usage(domain: &str, charge: &Charge, extra_tokens: u64, extra_cost: u64) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some((name, limits)) = charge.client {
        if limits.tpm.is_some() && extra_tokens > 0 {
            let kind = LimitKind::ClientTokens;
            out.push(client(domain, kind, name, None, extra_tokens));
        }
        if limits.monthly_budget_micro.is_some() && extra_cost > 0 {
            let month = month_label(charge.now_ms);
            let kind = LimitKind::ClientBudget;
            out.push(client(domain, kind, name, Some(&month), extra_cost));
        }
    }
    if let Some((key, budget)) = charge.target {
        if budget.tpm.is_some() && extra_tokens > 0 {
            out.push(target(domain, LimitKind::TargetTokens, key, extra_tokens));
        }
    }
    out
}

fn client(domain: &str, kind: LimitKind, name: &str, month: Option<&str>, hits: u64) -> Check {
    let mut entries = vec![("limit", kind.name()), ("client", name)];
    if let Some(month) = month {
        entries.push(("month", month));
    }
    check(domain, kind, &entries, hits)
}

fn target(domain: &str, kind: LimitKind, key: &str, hits: u64) -> Check {
    check(
        domain,
        kind,
        &[("limit", kind.name()), ("target", key)],
        hits,
    )
}

fn check(domain: &str, kind: LimitKind, entries: &[(&str, &str)], hits: u64) -> Check {
    // A call carries at most u32::MAX hits, and at least one (0 would read as 1 anyway).
    let hits = u32::try_from(hits).unwrap_or(u32::MAX).max(1);
    let request = RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
        }],
        hits_addend: hits,
    };
    Check {
        kind,
        hits,
        message: request.encode_to_vec(),
    }
}

/// The budget descriptor's `month`: the UTC calendar month, `YYYY-MM`.
pub fn month_label(now_ms: u64) -> String {
    let index = month_index(now_ms);
    format!("{:04}-{:02}", 1970 + index / 12, index % 12 + 1)
}
