//! Route: the candidates for the request, in order, by the plan's rules.
//!
//! Takes the parsed request and its classification ([`RouteRequest`]), the request headers
//! the rules name ([`RuleHeaders`], read once) and the sources of choice ([`Sources`]:
//! the request's seed, the shared health board, stats); gives the routing decision with
//! the health states it read ([`Routed`]), which admission writes from without reading them
//! again. A request routing refuses is answered by its [`Refusal`] ([`refusal`]): a model
//! the caller may not use is a 403 counted in its stats ([`forbidden`]). With failover, the
//! usable candidates go to the failover cluster together ([`failover_candidates`]).

use crate::clients::stats::ClientStat;
use crate::config::plan::{FailoverPlan, Plan};
use crate::errors::ApiError;
use crate::health::{Availability, HealthBoard, Unhealthy};
use crate::host::Host;
use crate::metrics::Metrics;
use crate::pipeline::admit::Seen;
use crate::pipeline::answer::Refusal;
use crate::pipeline::chooser::{HealthRead, HostChooser};
use crate::pipeline::identify::{Caller, ClientHeaders};
use crate::route::{route, Candidate, Decision, RouteError, RouteRequest};

/// The values of the request headers the rules look at, read once.
pub(super) struct RuleHeaders(Vec<(String, Option<String>)>);

impl RuleHeaders {
    pub(super) fn read(plan: &Plan, client: &ClientHeaders, host: &dyn Host) -> RuleHeaders {
        let mut header_values: Vec<(String, Option<String>)> = Vec::new();
        for rule in &plan.rules {
            for h in &rule.matcher.headers {
                if !header_values.iter().any(|(n, _)| *n == h.name) {
                    let v = client.get(host, &h.name);
                    header_values.push((h.name.clone(), v));
                }
            }
        }
        RuleHeaders(header_values)
    }

    /// The value of header `name`, if the client sent it.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }
}

/// Where routing's choices come from, besides the request.
pub(super) struct Sources<'f> {
    /// Seed for `weighted` choices, distinct per request.
    pub(super) seed: u64,
    /// Read for each candidate's state, when health is on.
    pub(super) board: &'f HealthBoard,
    pub(super) metrics: Option<&'f Metrics>,
    pub(super) now_ms: u64,
}

/// What routing gives.
pub(super) struct Routed {
    pub(super) decision: Result<Decision, RouteError>,
    /// The health states read, for admission.
    pub(super) seen: Seen,
    /// A health read failed: the request goes on without health.
    pub(super) degraded: bool,
}

/// Routes `request` by the plan, with the host as the source of choice ([`HostChooser`]).
pub(super) fn choose(
    host: &mut dyn Host,
    plan: &Plan,
    request: &RouteRequest,
    sources: Sources,
) -> Routed {
    let mut chooser = HostChooser {
        host,
        rng: sources.seed,
        health: plan.health.enabled.then_some(HealthRead {
            board: sources.board.clone(),
            plan,
            now_ms: sources.now_ms,
        }),
        degraded: false,
        seen: Vec::new(),
        metrics: sources.metrics,
    };
    let decision = route(plan, request, &mut chooser);
    Routed {
        decision,
        seen: std::mem::take(&mut chooser.seen),
        degraded: chooser.degraded,
    }
}

/// The answer to a request routing refused.
pub(super) fn refusal(e: RouteError, caller: Option<&Caller>) -> Refusal {
    match e {
        RouteError::NotAllowed => Refusal::Api(forbidden(caller, None)),
        RouteError::UnknownModel(m) => Refusal::Api(ApiError::model_not_found(&m)),
        RouteError::NoCandidate(reason) => Refusal::Api(ApiError::no_candidate(reason)),
        RouteError::AllUnavailable { until_ms } => Refusal::AllUnavailable { until_ms },
    }
}

/// A requested `model` the caller may not use is refused before routing.
pub(super) fn check_allowed(caller: Option<&Caller>, model: Option<&str>) -> Result<(), ApiError> {
    if let (Some(c), Some(model)) = (caller, model) {
        if !c.client.allows_model(model) {
            return Err(forbidden(caller, Some(model)));
        }
    }
    Ok(())
}

/// The 403 for a model the caller may not use (counted in its stats).
pub(super) fn forbidden(caller: Option<&Caller>, model: Option<&str>) -> ApiError {
    if let Some(c) = caller {
        if let Some(m) = c.metrics {
            m.clients.add(c.index, ClientStat::Forbidden, 1);
        }
    }
    ApiError::model_not_allowed(model)
}

/// Counts the candidates the decision passed over for their budget.
pub(super) fn count_budget_skips(host: &mut dyn Host, metrics: Option<&Metrics>, d: &Decision) {
    let Some(m) = metrics else {
        return;
    };
    for c in &d.candidates {
        if let Availability::Unavailable {
            reason: Unhealthy::OverBudget,
            ..
        } = c.availability
        {
            m.budget_skip(host, m.scopes(&c.key, &d.source));
        }
    }
}

/// The candidates a request may fail over to, in order (at most `failover.max_attempts`),
/// when failover is configured, the client allows fallbacks and at least two are usable.
pub(super) fn failover_candidates<'p, 'd>(
    plan: &'p Plan,
    decision: &'d Decision,
) -> Option<(&'p FailoverPlan, Vec<&'d Candidate>)> {
    let failover = plan.failover.as_ref()?;
    if !decision.allow_fallbacks {
        return None;
    }
    let usable: Vec<&Candidate> = decision
        .candidates
        .iter()
        .filter(|c| c.availability.is_usable() && plan.targets.contains_key(&c.key))
        .take(failover.max_attempts as usize)
        .collect();
    (usable.len() >= 2).then_some((failover, usable))
}
