//! Choosing a target: ordered rules (first match wins), then model aliases, then the
//! default; the client's `allowed_models` / `provider` preferences narrow the candidates;
//! the action's strategy orders what is left.

pub mod capable;
pub mod prefs;
pub mod select;

use crate::classify::Classification;
use crate::clients::Client;
use crate::config::plan::{Action, HeaderTest, Matcher, Plan, Target};
use crate::config::raw::{Strategy, UnknownModel, WhenAllUnhealthy};
use crate::endpoint::Endpoint;
use crate::health::{Availability, Budget, HealthBoard};
use crate::translate::Format;

pub use prefs::ClientPrefs;
pub use select::{Chooser, TargetStatus};

/// What the router knows about one request when it routes it.
pub struct RouteRequest<'a> {
    pub endpoint: Endpoint,
    /// `None` for an omitted model or `auto`.
    pub model: Option<&'a str>,
    pub classification: &'a Classification,
    /// Reads a request header by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub prefs: &'a ClientPrefs,
    /// `max_tokens` and friends, if the client gave them: used by `cheapest`.
    pub max_output_tokens: Option<u64>,
    /// The configured client that sent the request (`clients`), if known.
    pub client: Option<&'a Client>,
    /// The output format it asks for (`response_format` and friends), for `capabilities`.
    pub format: capable::OutputFormat,
}

/// One upstream + model to send the request to.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub upstream: usize,
    pub model: String,
    /// Key on the health board.
    pub key: String,
    pub budget: Budget,
    /// As the health view saw it when routing (available when health is not tracked).
    pub availability: Availability,
}

/// The outcome of routing: candidates in the order to try them, the chosen one first.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `rule:<name>`, `model:<alias>`, `default` or `passthrough`.
    pub source: String,
    pub strategy: Strategy,
    pub candidates: Vec<Candidate>,
    /// False when the client asked for no fallbacks (`provider.allow_fallbacks: false`).
    pub allow_fallbacks: bool,
}

impl Decision {
    pub fn chosen(&self) -> Option<&Candidate> {
        self.candidates.first()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// An explicit model that nothing routes (404).
    UnknownModel(String),
    /// `auto` routing found targets, but none the client may use (403).
    NotAllowed,
    /// Every candidate was filtered out (503), with why.
    NoCandidate(String),
    /// Every candidate is cooling down or out of budget and the configuration says
    /// `when_all_unhealthy: "reject"` (503 with `Retry-After`): the soonest one is back at
    /// `until_ms` (epoch ms).
    AllUnavailable { until_ms: u64 },
}

/// When the client gives no `max_tokens`, `cheapest` assumes this many output tokens.
pub const ASSUMED_OUTPUT_TOKENS: u64 = 512;

pub fn route(
    plan: &Plan,
    req: &RouteRequest<'_>,
    chooser: &mut dyn Chooser,
) -> Result<Decision, RouteError> {
    if let Some(rule) = plan.rules.iter().find(|r| matches(&r.matcher, req)) {
        return decide(
            plan,
            &rule.action,
            format!("rule:{}", rule.name),
            req,
            chooser,
        );
    }
    match req.model {
        Some(model) => {
            if let Some(action) = plan.aliases.get(model) {
                return decide(plan, action, format!("model:{model}"), req, chooser);
            }
            match (plan.unknown_model, plan.passthrough_upstream) {
                (UnknownModel::Passthrough, Some(upstream)) => {
                    let action = Action {
                        name: "passthrough".to_owned(),
                        targets: vec![Target {
                            upstream,
                            model: model.to_owned(),
                            weight: 1,
                            price: None,
                            budget: Budget::default(),
                            key: plan
                                .upstream(upstream)
                                .map(|u| HealthBoard::passthrough_key(&u.name))
                                .unwrap_or_default(),
                            caps: Default::default(),
                        }],
                        strategy: Strategy::Priority,
                    };
                    decide(plan, &action, "passthrough".to_owned(), req, chooser)
                }
                _ => Err(RouteError::UnknownModel(model.to_owned())),
            }
        }
        None => match &plan.default {
            Some(action) => decide(plan, action, "default".to_owned(), req, chooser),
            None => Err(RouteError::NoCandidate(
                "No routing rule matched this request and no default route is configured."
                    .to_owned(),
            )),
        },
    }
}

fn matches(m: &Matcher, req: &RouteRequest<'_>) -> bool {
    let c = req.classification;
    let model_ok = match (&m.models, req.model) {
        (None, model) => model.is_none(),
        (Some(mm), None) => mm.auto,
        (Some(mm), Some(model)) => mm.globs.iter().any(|g| g.matches(model)),
    };
    model_ok
        && m.tasks.as_ref().is_none_or(|t| t.contains(&c.task))
        && m.complexities
            .as_ref()
            .is_none_or(|x| x.contains(&c.complexity))
        && m.tags
            .as_ref()
            .is_none_or(|tags| tags.iter().any(|t| c.tags.contains(t)))
        && m.endpoints
            .as_ref()
            .is_none_or(|e| e.contains(&req.endpoint))
        && m.stream.is_none_or(|s| s == c.stream)
        && m.tools.is_none_or(|t| t == c.has_tools)
        && m.images.is_none_or(|i| i == c.has_images)
        && m.min_prompt_tokens
            .is_none_or(|min| c.estimated_prompt_tokens >= min)
        && m.max_prompt_tokens
            .is_none_or(|max| c.estimated_prompt_tokens <= max)
        && m.clients.as_ref().is_none_or(|globs| {
            req.client
                .is_some_and(|c| globs.iter().any(|g| g.matches(&c.name)))
        })
        && m.profiles.as_ref().is_none_or(|profiles| {
            req.client
                .and_then(|c| c.profile)
                .is_some_and(|p| profiles.contains(&p))
        })
        && m.headers.iter().all(|h| {
            let value = (req.header)(&h.name);
            match (&h.test, value) {
                (HeaderTest::Present(want), v) => *want == v.is_some(),
                (HeaderTest::Exact(want), Some(v)) => *want == v,
                (HeaderTest::Regex(re), Some(v)) => re.is_match(&v),
                (_, None) => false,
            }
        })
}

fn decide(
    plan: &Plan,
    action: &Action,
    source: String,
    req: &RouteRequest<'_>,
    chooser: &mut dyn Chooser,
) -> Result<Decision, RouteError> {
    let mut why_empty: Vec<String> = Vec::new();
    let mut pool: Vec<&Target> = Vec::with_capacity(action.targets.len());
    // `auto` keeps to the targets the client may use; an explicit model was checked by name.
    let client = req.client.filter(|_| req.model.is_none());
    let mut not_allowed = 0usize;
    let needs = capable::Needs::of(req.classification, req.max_output_tokens, req.format);
    let mut skipped = capable::Skipped::default();
    for target in &action.targets {
        let Some(upstream) = plan.upstream(target.upstream) else {
            continue;
        };
        if client.is_some_and(|c| !c.allows_target(&upstream.name, &target.model)) {
            not_allowed += 1;
            continue;
        }
        if let Some(reason) = req.prefs.excludes(&upstream.name, &target.model) {
            push_reason(&mut why_empty, reason);
            continue;
        }
        if let Some(var) = &upstream.missing_key_env {
            push_reason(
                &mut why_empty,
                format!(
                    "upstream `{}` has no API key ({var} is not set)",
                    upstream.name
                ),
            );
            continue;
        }
        if !Format::serves(upstream.format, req.endpoint) {
            push_reason(
                &mut why_empty,
                format!(
                    "upstream `{}` speaks the Anthropic Messages API, which has no {} endpoint",
                    upstream.name,
                    req.endpoint.name()
                ),
            );
            continue;
        }
        if let Some(why) = capable::unfit(&target.caps, &needs, req.prefs.require_parameters) {
            chooser.skipped(&target.key, why.capability());
            skipped.push(&upstream.name, &target.model, why);
            continue;
        }
        pool.push(target);
    }
    why_empty.extend(skipped.into_reasons());
    if pool.is_empty() && not_allowed > 0 && not_allowed == action.targets.len() {
        return Err(RouteError::NotAllowed);
    }
    if pool.is_empty() {
        let reasons = if why_empty.is_empty() {
            "no targets".to_owned()
        } else {
            why_empty.join("; ")
        };
        return Err(RouteError::NoCandidate(format!(
            "No target is available for this request ({source}): {reasons}."
        )));
    }

    let strategy = req
        .prefs
        .strategy_override()
        .or_else(|| req.client.and_then(Client::strategy))
        .unwrap_or(action.strategy);
    // Health: usable targets (available or probe-able) go first, in the strategy's order;
    // the unusable ones follow, soonest back first.
    let mut usable: Vec<(&Target, TargetStatus)> = Vec::with_capacity(pool.len());
    let mut unusable: Vec<(&Target, TargetStatus)> = Vec::new();
    for target in pool {
        let status = chooser
            .health(&target.key, &target.budget)
            .unwrap_or(TargetStatus::UNKNOWN);
        if status.availability.is_usable() {
            usable.push((target, status));
        } else {
            unusable.push((target, status));
        }
    }
    unusable.sort_by_key(|(_, s)| s.availability.ready_at());
    if usable.is_empty() && plan.health.when_all_unhealthy == WhenAllUnhealthy::Reject {
        let until_ms = unusable
            .first()
            .map(|(_, s)| s.availability.ready_at())
            .unwrap_or(0);
        return Err(RouteError::AllUnavailable { until_ms });
    }
    let mut ordered: Vec<&Target> = if req.prefs.order.is_empty() {
        select::order_with_health(
            strategy,
            &usable,
            &action.name,
            req.classification.estimated_prompt_tokens,
            req.max_output_tokens.unwrap_or(ASSUMED_OUTPUT_TOKENS),
            chooser,
        )
    } else {
        let targets: Vec<&Target> = usable.iter().map(|(t, _)| *t).collect();
        req.prefs.apply_order(&targets, |t| {
            plan.upstream(t.upstream)
                .map(|u| u.name.as_str())
                .unwrap_or("")
        })
    };
    let status_of = |t: &Target| {
        usable
            .iter()
            .chain(unusable.iter())
            .find(|(u, _)| std::ptr::eq(*u, t))
            .map(|(_, s)| s.availability)
            .unwrap_or(Availability::Available)
    };
    ordered.extend(unusable.iter().map(|(t, _)| *t));
    let mut candidates: Vec<Candidate> = ordered
        .into_iter()
        .map(|t| Candidate {
            upstream: t.upstream,
            model: t.model.clone(),
            key: t.key.clone(),
            budget: t.budget,
            availability: status_of(t),
        })
        .collect();
    if !req.prefs.allow_fallbacks {
        candidates.truncate(1);
    }
    Ok(Decision {
        source,
        strategy,
        candidates,
        allow_fallbacks: req.prefs.allow_fallbacks,
    })
}

fn push_reason(reasons: &mut Vec<String>, reason: String) {
    if !reasons.contains(&reason) {
        reasons.push(reason);
    }
}

#[cfg(test)]
mod tests;
