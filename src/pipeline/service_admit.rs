//! Admit at the rate-limit service (`rate_limit_service`): the request's calls go out
//! together once it is routed, the request waits paused for their answers, and the verdict
//! sends it on or refuses it; at the end of the stream the usage beyond what admission
//! charged is reported (the host keeps those calls alive past the stream).
//!
//! Admission charges the prompt estimate and its estimated cost; [`Charged`] keeps what was
//! charged so that the report adds only the rest. A request let through because the service
//! failed (`failure_mode: allow`) was charged nothing: its report carries all of its usage.

use crate::calendar::{month_index, month_start_ms};
use crate::clients::ledger::{duration, rate_limit_headers, retry_after_seconds, Allowance};
use crate::clients::Client;
use crate::clients::Quota;
use crate::config::plan::{Plan, Price};
use crate::config::raw::FailureMode;
use crate::errors::ApiError;
use crate::health::board::KEY_PREFIX;
use crate::host::Host;
use crate::metrics::{cost_micro_usd, Metrics};
use crate::pipeline::answer::Refusal;
use crate::ratelimit::checks::{self, Charge};
use crate::ratelimit::stats::ServiceStat;
use crate::ratelimit::verdict::{self, Answer, LimitStatus, Verdict};
use crate::ratelimit::{Check, LimitKind, ServicePlan, METHOD, SERVICE};
use crate::usage::Usage;

/// What admission charged at the service, for the report at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Charged {
    pub(super) tokens: u64,
    pub(super) cost_micro: u64,
    /// The target's key, when it has a budget at the service.
    pub(super) target: Option<String>,
}

/// An admission waiting for the service.
#[derive(Debug)]
pub(super) struct Waiting {
    /// Token, limit and answer of each call, in call order.
    calls: Vec<(u32, LimitKind, Option<Answer>)>,
    started_ms: u64,
}

/// Sends the admission's `checks`; the answers are due unless every call failed at once
/// ([`Waiting::verdict`]).
pub(super) fn start(
    host: &mut dyn Host,
    service: &ServicePlan,
    checks: &[Check],
    now_ms: u64,
) -> Waiting {
    let mut calls = Vec::with_capacity(checks.len());
    for check in checks {
        match host.grpc_call(&service.call((SERVICE, METHOD), check)) {
            Ok(token) => calls.push((token, check.kind, None)),
            Err(e) => {
                let failed = Answer::Failed(format!("the call could not be made: {e}"));
                calls.push((0, check.kind, Some(failed)));
            }
        }
    }
    Waiting {
        calls,
        started_ms: now_ms,
    }
}

impl Waiting {
    /// Takes the answer to call `token`; the verdict once every call has answered.
    pub(super) fn answer(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        grpc_status: u32,
        size: usize,
    ) -> Option<Verdict> {
        let slot = self
            .calls
            .iter_mut()
            .find(|(t, _, a)| *t == token && a.is_none())?;
        // A failed call has no message to read.
        let read = if grpc_status == 0 {
            host.grpc_response(size)
        } else {
            Ok(None)
        };
        let message = match read {
            Ok(m) => m,
            Err(e) => {
                slot.2 = Some(Answer::Failed(format!("the answer could not be read: {e}")));
                return self.verdict();
            }
        };
        slot.2 = Some(verdict::answer(grpc_status, message.as_deref()));
        self.verdict()
    }

    /// The verdict, once every call has its answer.
    pub(super) fn verdict(&self) -> Option<Verdict> {
        let answers: Option<Vec<(LimitKind, Answer)>> = self
            .calls
            .iter()
            .map(|(_, kind, a)| Some((*kind, a.clone()?)))
            .collect();
        Some(verdict::combine(&answers?))
    }

    pub(super) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Counts each call's answer in the service's stats.
    pub(super) fn count(&self, metrics: Option<&Metrics>) {
        let Some(m) = metrics else { return };
        for (_, _, answer) in &self.calls {
            let stat = match answer {
                Some(Answer::Ok(_)) => ServiceStat::Ok,
                Some(Answer::OverLimit(_)) => ServiceStat::OverLimit,
                _ => ServiceStat::Error,
            };
            m.limits_service.add(stat, 1);
        }
    }
}

/// What a verdict does to the request: `Ok` it goes on (`true`: charged at the service),
/// `Err` the refusal the client gets.
pub(super) fn decide(
    verdict: &Verdict,
    service: &ServicePlan,
    client: Option<&Client>,
    metrics: Option<&Metrics>,
    now_ms: u64,
) -> Result<bool, Refusal> {
    match verdict {
        Verdict::Admitted(_) => Ok(true),
        Verdict::Limited { kind, status } => Err(limited(*kind, status.as_ref(), client, now_ms)),
        Verdict::Unavailable(why) => match service.failure_mode {
            FailureMode::Allow => {
                log::warn!("llm-router: rate-limit service failed ({why}): the request goes on without its limits");
                if let Some(m) = metrics {
                    m.limits_service.add(ServiceStat::FailedOpen, 1);
                }
                Ok(false)
            }
            FailureMode::Deny => {
                log::warn!("llm-router: rate-limit service failed ({why}): the request is refused");
                if let Some(m) = metrics {
                    m.limits_service.add(ServiceStat::FailedClosed, 1);
                }
                Err(Refusal::Limited(
                    ApiError::limits_unavailable(),
                    vec![("retry-after", "1".to_owned())],
                ))
            }
        },
    }
}

/// The client's `x-ratelimit-*` figures from what the service said of its rpm and tpm
/// (envoyproxy/ratelimit says it; Limitador does not, and then there are none).
pub(super) fn quota(verdict: &Verdict) -> Option<Quota> {
    let Verdict::Admitted(statuses) = verdict else {
        return None;
    };
    let allowance = |want: LimitKind| {
        statuses
            .iter()
            .find(|(k, _)| *k == want)
            .and_then(|(_, s)| {
                Some(Allowance {
                    limit: s.limit?,
                    remaining: s.remaining,
                    reset_ms: s.reset_ms.unwrap_or(0),
                })
            })
    };
    let quota = Quota {
        requests: allowance(LimitKind::ClientRequests),
        tokens: allowance(LimitKind::ClientTokens),
    };
    (quota.requests.is_some() || quota.tokens.is_some()).then_some(quota)
}

/// The 429 of a limit the service says is over: `Retry-After` from the service when it
/// says when the limit resets, else from the limit's window (a minute; the month's end for
/// a budget), and the `x-ratelimit-*` of the limit when it is a client's rpm or tpm.
fn limited(
    kind: LimitKind,
    status: Option<&LimitStatus>,
    client: Option<&Client>,
    now_ms: u64,
) -> Refusal {
    let retry_ms = status
        .and_then(|s| s.reset_ms)
        .unwrap_or_else(|| match kind {
            LimitKind::ClientBudget => {
                month_start_ms(month_index(now_ms).saturating_add(1)).saturating_sub(now_ms)
            }
            _ => 60_000,
        });
    let limits = client.map(|c| c.limits).unwrap_or_default();
    let configured = match kind {
        LimitKind::ClientRequests => limits.rpm.map(u64::from),
        LimitKind::ClientTokens => limits.tpm,
        LimitKind::ClientBudget => limits.monthly_budget_micro,
        _ => None,
    };
    let limit = status.and_then(|s| s.limit).or(configured);
    let name = client.map_or("", |c| c.name.as_str());
    let error = ApiError::rate_limited_at_service(kind, name, limit, &duration(retry_ms));
    let mut headers = vec![("retry-after", retry_after_seconds(retry_ms).to_string())];
    // The client's rpm or tpm, as the embedded limits report them.
    let allowance = limit.map(|limit| Allowance {
        limit,
        remaining: status.map_or(0, |s| s.remaining),
        reset_ms: retry_ms,
    });
    let quota = match kind {
        LimitKind::ClientRequests => Quota {
            requests: allowance,
            tokens: None,
        },
        LimitKind::ClientTokens => Quota {
            requests: None,
            tokens: allowance,
        },
        _ => Quota::default(),
    };
    headers.extend(rate_limit_headers(&quota));
    Refusal::Limited(error, headers)
}

/// Whether the service refused the request on one of the client's limits.
pub(super) fn is_clients(v: &Verdict) -> bool {
    matches!(v, Verdict::Limited { kind, .. } if kind.is_client())
}

/// Who a request to the target `target_key` (its health-board key) counts against.
fn charge<'p>(
    service: &'p ServicePlan,
    client: Option<&'p Client>,
    target_key: &'p str,
    now_ms: u64,
) -> Charge<'p> {
    // The descriptor names the target `upstream/model`, without the board's prefix.
    let name = target_key.strip_prefix(KEY_PREFIX).unwrap_or(target_key);
    Charge {
        client: client.map(|c| (c.name.as_str(), &c.limits)),
        target: service.budget(target_key).map(|b| (name, b)),
        now_ms,
    }
}

/// The calls of a request's admission, and what they charge: the prompt estimate, and its
/// cost at the target's price when the client has a budget.
pub(super) fn admission(
    plan: &Plan,
    service: &ServicePlan,
    client: Option<&Client>,
    target_key: &str,
    estimate: u64,
    now_ms: u64,
) -> (Vec<Check>, Charged) {
    let charge = charge(service, client, target_key, now_ms);
    let budgeted = client.is_some_and(|c| c.limits.monthly_budget_micro.is_some());
    let cost = match plan.targets.get(target_key).and_then(|t| t.price) {
        Some(price) if budgeted => cost_micro_usd(&price, estimate, 0, 0),
        _ => 0,
    };
    let checks = checks::admission(&service.domain, &charge, estimate, cost);
    let charged = Charged {
        tokens: estimate,
        cost_micro: cost,
        target: charge.target.map(|_| target_key.to_owned()),
    };
    (checks, charged)
}

/// How a request admitted at the service ended.
pub(super) struct Done {
    pub(super) usage: Option<Usage>,
    /// Of the target that served.
    pub(super) price: Option<Price>,
    pub(super) now_ms: u64,
}

/// Reports the usage beyond what admission `charged` to the service: fire and forget, the
/// answers are not awaited.
pub(super) fn report(
    host: &mut dyn Host,
    service: &ServicePlan,
    client: Option<&Client>,
    charged: &Charged,
    done: &Done,
    metrics: Option<&Metrics>,
) {
    let key = charged.target.as_deref().unwrap_or("");
    let charge = charge(service, client, key, done.now_ms);
    let tokens = done.usage.map_or(0, |u| u.total);
    let cost = match (done.usage, done.price) {
        (Some(u), Some(price)) => {
            cost_micro_usd(&price, u.prompt, u.cached.unwrap_or(0), u.completion)
        }
        _ => 0,
    };
    let extra_tokens = tokens.saturating_sub(charged.tokens);
    let extra_cost = cost.saturating_sub(charged.cost_micro);
    let calls = checks::usage(&service.domain, &charge, extra_tokens, extra_cost);
    for check in calls {
        let stat = match host.grpc_call(&service.call(service.report_method(), &check)) {
            Ok(_) => ServiceStat::Reports,
            Err(e) => {
                log::warn!(
                    "llm-router: could not report {} to the rate-limit service: {e}",
                    check.kind.name()
                );
                ServiceStat::ReportErrors
            }
        };
        if let Some(m) = metrics {
            m.limits_service.add(stat, 1);
        }
    }
}
