//! The service's answers to one request's calls, as one admission: a limit over refuses the
//! request (the first in call order names it), else a call that failed (a gRPC status, a
//! timeout, an answer that is no `RateLimitResponse`, `UNKNOWN`) leaves it to the
//! configured failure mode, else it is admitted.

use super::checks::LimitKind;
use super::proto::{decode_response, Code, DescriptorStatus};

/// gRPC status OK.
const GRPC_OK: u32 = 0;

/// What the service said of one limit, when it said more than the code (envoyproxy/ratelimit
/// does; Limitador does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub limit: Option<u64>,
    pub remaining: u64,
    pub reset_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok(Option<LimitStatus>),
    OverLimit(Option<LimitStatus>),
    Failed(String),
}

/// One call's answer from its gRPC status and message.
pub fn answer(grpc_status: u32, message: Option<&[u8]>) -> Answer {
    if grpc_status != GRPC_OK {
        return Answer::Failed(format!("gRPC status {}", grpc_status_name(grpc_status)));
    }
    let Some(response) = message.and_then(decode_response) else {
        return Answer::Failed("an answer that is not a RateLimitResponse".to_owned());
    };
    let status = response.statuses.first().map(limit_status);
    match Code::try_from(response.overall_code) {
        Ok(Code::Ok) => Answer::Ok(status),
        Ok(Code::OverLimit) => Answer::OverLimit(status),
        _ => Answer::Failed("the code UNKNOWN (is the domain configured?)".to_owned()),
    }
}

fn limit_status(s: &DescriptorStatus) -> LimitStatus {
    LimitStatus {
        limit: s
            .current_limit
            .as_ref()
            .map(|l| u64::from(l.requests_per_unit)),
        remaining: u64::from(s.limit_remaining),
        reset_ms: s.duration_until_reset.and_then(|d| d.as_ms()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every limit has room; what the service said of each (for `x-ratelimit-*`).
    Admitted(Vec<(LimitKind, LimitStatus)>),
    Limited {
        kind: LimitKind,
        status: Option<LimitStatus>,
    },
    /// The service could not say (the failure mode decides).
    Unavailable(String),
}

/// The admission of a request from its calls' answers, in call order.
pub fn combine(answers: &[(LimitKind, Answer)]) -> Verdict {
    let mut failed = None;
    let mut statuses = Vec::new();
    for (kind, answer) in answers {
        match answer {
            Answer::OverLimit(status) => {
                return Verdict::Limited {
                    kind: *kind,
                    status: *status,
                }
            }
            Answer::Failed(why) => {
                failed.get_or_insert_with(|| format!("{}: {why}", kind.name()));
            }
            Answer::Ok(Some(status)) => statuses.push((*kind, *status)),
            Answer::Ok(None) => {}
        }
    }
    match failed {
        Some(why) => Verdict::Unavailable(why),
        None => Verdict::Admitted(statuses),
    }
}

fn grpc_status_name(code: u32) -> String {
    let name = match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        4 => "DEADLINE_EXCEEDED (timeout)",
        5 => "NOT_FOUND",
        8 => "RESOURCE_EXHAUSTED",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        _ => return code.to_string(),
    };
    format!("{code} {name}")
}
