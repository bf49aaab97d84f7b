//! Admit: the routed request is let through by the target's health and the caller's limits.
//!
//! Takes the routing decision, the states routing read from the shared health board and the
//! prompt token estimate; gives the candidate to send to ([`HealthAdmission::admit`]: in
//! flight + 1, budget charged with the estimate, half-open probe claimed by compare-and-swap)
//! and, last, the caller's admission on its ledger ([`admit_caller`]: its `x-ratelimit-*`
//! figures, or the 429), so that only a request that would be sent counts against its
//! limits. The request sent is counted from then on ([`start_meter`]). At the end of the
//! stream [`settle_caller`] writes what admission could not know yet (tokens beyond the
//! estimate, spend). A shared-data call that fails never fails the request: it is logged
//! and the request goes on without health, or without the limits.

use std::rc::Rc;

use crate::clients::ledger::{rate_limit_headers, retry_after_seconds};
use crate::clients::stats::ClientStat;
use crate::clients::{ClientUsage, Quota};
use crate::config::plan::{Plan, Price};
use crate::config::raw::WhenAllUnhealthy;
use crate::errors::ApiError;
use crate::health::{soonest, Admission, Availability, HealthBoard, TargetHealth};
use crate::host::shared::{self, Read};
use crate::host::{Host, CAS_RETRIES};
use crate::metrics::{cost_micro_usd, Metrics};
use crate::pipeline::answer::Refusal;
use crate::pipeline::identify::Caller;
use crate::pipeline::track::{Meter, Tracker};
use crate::route::{Candidate, Decision};
use crate::usage::Usage;

/// The target states routing read, by key, with their tokens for the write.
pub(super) type Seen = Vec<(String, Read<TargetHealth>)>;

/// The health board as one request uses it.
pub(super) struct HealthAdmission<'f> {
    pub(super) board: &'f HealthBoard,
    /// Starts tracking the admitted target.
    pub(super) tracker: &'f mut Tracker,
    /// Set when health could not be read or written for this request (it is routed without
    /// it).
    pub(super) degraded: &'f mut bool,
}

impl HealthAdmission<'_> {
    /// Admits the request on the health board: the first usable candidate whose admission
    /// wins (another worker may have claimed its probe or spent its budget meanwhile), else,
    /// by `when_all_unhealthy`, the one that recovers soonest or a refusal. Returns the index
    /// of the chosen candidate. Without health, or when the board cannot be used, the first
    /// candidate, untracked.
    /// `seen`: the states routing read (each admission writes from its read, once).
    pub(super) fn admit(
        self,
        host: &mut dyn Host,
        plan: &Plan,
        decision: &Decision,
        tokens: u64,
        now: u64,
        seen: &mut Seen,
    ) -> Result<usize, Refusal> {
        if !plan.health.enabled || *self.degraded {
            return Ok(0);
        }
        let policy = &plan.health.policy;
        let mut unavailable: Vec<(usize, Availability)> = Vec::new();
        for (i, c) in decision.candidates.iter().enumerate() {
            if !c.availability.is_usable() {
                unavailable.push((i, c.availability));
                continue;
            }
            let first = take_seen(seen, &c.key);
            match self.board.update_from(host, &c.key, first, |h| {
                h.admit(now, policy, &c.budget, tokens)
            }) {
                Ok((_, Admission::Admitted { probe })) => {
                    self.tracker.start(&c.key, probe, now, tokens, &c.budget);
                    return Ok(i);
                }
                Ok((_, Admission::Refused { until_ms, reason })) => {
                    unavailable.push((i, Availability::Unavailable { until_ms, reason }));
                }
                Err(e) => {
                    log::warn!("llm-router: routing without health: {e}");
                    *self.degraded = true;
                    return Ok(i);
                }
            }
        }
        let Some((i, availability)) = soonest(unavailable) else {
            return Ok(0);
        };
        if plan.health.when_all_unhealthy == WhenAllUnhealthy::Reject {
            return Err(Refusal::AllUnavailable {
                until_ms: availability.ready_at(),
            });
        }
        let Some(c) = decision.candidates.get(i) else {
            return Ok(0);
        };
        // Every candidate is unavailable: the soonest back takes it (as the probe if its
        // cooldown is over by now).
        let first = take_seen(seen, &c.key);
        match self.board.update_from(host, &c.key, first, |h| {
            let probe = h.try_claim_probe(now, policy, &c.budget);
            h.on_start(now, tokens);
            probe
        }) {
            Ok((_, probe)) => self.tracker.start(&c.key, probe, now, tokens, &c.budget),
            Err(e) => {
                log::warn!("llm-router: routing without health: {e}");
                *self.degraded = true;
            }
        }
        Ok(i)
    }
}

/// The request is sent to `chosen`: counted in stats from now on. `passed_over`: how many
/// candidates health admission passed over before it (each counts a failover); `None`
/// when it goes through the failover cluster, where the rule counts the request once and
/// each attempt counts on its target.
pub(super) fn start_meter(
    host: &mut dyn Host,
    m: &Rc<Metrics>,
    decision: &Decision,
    chosen: &Candidate,
    passed_over: Option<usize>,
    estimate: u64,
    now: u64,
) -> Meter {
    let Some(index) = passed_over else {
        let at = m.scopes(&chosen.key, &decision.source).rule_only();
        return Meter::start(m, host, at, estimate, now);
    };
    for skipped in decision.candidates.iter().take(index) {
        m.failover(host, m.scopes(&skipped.key, &decision.source));
    }
    let at = m.scopes(&chosen.key, &decision.source);
    Meter::start(m, host, at, estimate, now)
}

/// The state of `key` as routing read it, once (a second use must read again).
fn take_seen(seen: &mut Seen, key: &str) -> Option<Read<TargetHealth>> {
    let i = seen.iter().position(|(k, _)| k == key)?;
    Some(seen.swap_remove(i).1)
}

/// What the caller's admission leaves for the rest of the request.
#[derive(Debug, Default)]
pub(super) struct CallerAdmission {
    /// The caller's per-minute limits after its admission: `x-ratelimit-*` of the response.
    pub(super) quota: Option<Quota>,
    /// Tokens charged to the caller's ledger; `Some` while its end is owed.
    pub(super) charged: Option<u64>,
}

/// Admits the request on the caller's ledger (shared by all workers): `Err` with the 429
/// when it is over a limit. A ledger that cannot be used lets the request through.
pub(super) fn admit_caller(
    host: &mut dyn Host,
    caller: &Caller,
    tokens: u64,
    now: u64,
) -> Result<CallerAdmission, Refusal> {
    let client = caller.client;
    if !client.limits.any() {
        return Ok(CallerAdmission::default());
    }
    let admitted = shared::update(
        host,
        &client.ledger_key,
        CAS_RETRIES,
        |u: &mut ClientUsage| u.admit(now, &client.limits, tokens),
    );
    match admitted {
        Ok((_, Ok(quota))) => Ok(CallerAdmission {
            // A budget alone has no `x-ratelimit-*` figures: the provider's stay.
            quota: (quota.requests.is_some() || quota.tokens.is_some()).then_some(quota),
            // Only tpm and the budget change at the end of the request.
            charged: client.limits.settles().then_some(tokens),
        }),
        Ok((_, Err(limited))) => {
            if let Some(m) = caller.metrics {
                m.clients.add(caller.index, ClientStat::RateLimited, 1);
            }
            let retry = retry_after_seconds(limited.retry_after_ms).to_string();
            let mut headers = vec![("retry-after", retry)];
            headers.extend(rate_limit_headers(&limited.quota));
            Err(Refusal::Limited(
                ApiError::rate_limited(&client.name, &limited),
                headers,
            ))
        }
        Err(e) => {
            log::warn!(
                "llm-router: client `{}` admitted without its limits: {e}",
                client.name
            );
            Ok(CallerAdmission::default())
        }
    }
}

/// The end of a request sent on for a client: its tokens and spend on its ledger (what
/// admission did not already count) and in its stats. `price`: of the target that served;
/// `charged`: what admission charged, if its end is owed.
pub(super) fn settle_caller(
    host: &mut dyn Host,
    caller: &Caller,
    usage: Option<Usage>,
    price: Option<Price>,
    charged: Option<u64>,
    now: u64,
) {
    let (index, client) = (caller.index, caller.client);
    let cost_micro = match (usage, price) {
        (Some(u), Some(price)) => {
            cost_micro_usd(&price, u.prompt, u.cached.unwrap_or(0), u.completion)
        }
        _ => 0,
    };
    if let Some(m) = caller.metrics {
        if let Some(u) = usage {
            m.clients.add(index, ClientStat::PromptTokens, u.prompt);
            m.clients
                .add(index, ClientStat::CompletionTokens, u.completion);
        }
        m.clients.add(index, ClientStat::CostMicro, cost_micro);
    }
    let Some(charged) = charged else {
        return;
    };
    // Only what a limit of the client counts is written.
    let extra = match (client.limits.tpm, usage) {
        (Some(_), Some(u)) => u.total.saturating_sub(charged),
        _ => 0,
    };
    let spend = match client.limits.monthly_budget_micro {
        Some(_) => cost_micro,
        None => 0,
    };
    if extra == 0 && spend == 0 {
        return;
    }
    let settled = shared::update(
        host,
        &client.ledger_key,
        CAS_RETRIES,
        |u: &mut ClientUsage| u.settle(now, extra, spend),
    );
    if let Err(e) = settled {
        log::warn!("llm-router: could not settle client `{}`: {e}", client.name);
    }
}
