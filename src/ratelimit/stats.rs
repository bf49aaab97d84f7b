//! The rate-limit service's stats: `llm_router.rate_limit_service.<stat>` (counters, and the
//! latency of an admission's calls as a histogram, in milliseconds).

use std::rc::Rc;

use crate::host::{Host, MetricKind};
use crate::metrics::pending::Pending;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStat {
    /// Calls answered OK.
    Ok,
    /// Calls answered OVER_LIMIT.
    OverLimit,
    /// Calls that failed: a gRPC status, a timeout, an answer that could not be read.
    Error,
    /// Requests let through without the service's limits (`failure_mode: allow`).
    FailedOpen,
    /// Requests refused because the service failed (`failure_mode: deny`).
    FailedClosed,
    /// Usage reports sent at the end of requests.
    Reports,
    /// Usage reports the host could not send.
    ReportErrors,
}

impl ServiceStat {
    pub const ALL: [ServiceStat; 7] = [
        ServiceStat::Ok,
        ServiceStat::OverLimit,
        ServiceStat::Error,
        ServiceStat::FailedOpen,
        ServiceStat::FailedClosed,
        ServiceStat::Reports,
        ServiceStat::ReportErrors,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            ServiceStat::Ok => "ok",
            ServiceStat::OverLimit => "over_limit",
            ServiceStat::Error => "error",
            ServiceStat::FailedOpen => "failure_mode_allowed",
            ServiceStat::FailedClosed => "failure_mode_denied",
            ServiceStat::Reports => "usage_reports",
            ServiceStat::ReportErrors => "usage_report_errors",
        }
    }
}

pub const PREFIX: &str = "llm_router.rate_limit_service.";
pub const LATENCY_STAT: &str = "llm_router.rate_limit_service.latency_ms";

#[derive(Debug, Default)]
pub struct ServiceStats {
    ids: [Option<u32>; ServiceStat::ALL.len()],
    latency: Option<u32>,
    pending: Rc<Pending>,
}

impl ServiceStats {
    pub fn define(host: &mut dyn Host, pending: Rc<Pending>) -> ServiceStats {
        let mut define = |kind, name: String| match host.define_metric(kind, &name) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("llm-router: cannot define stat {name}: {e}");
                None
            }
        };
        let ids = ServiceStat::ALL
            .map(|s| define(MetricKind::Counter, format!("{PREFIX}{}", s.suffix())));
        let latency = define(MetricKind::Histogram, LATENCY_STAT.to_owned());
        ServiceStats {
            ids,
            latency,
            pending,
        }
    }

    pub fn add(&self, stat: ServiceStat, delta: i64) {
        let slot = ServiceStat::ALL.iter().position(|s| *s == stat);
        if let Some(id) = slot.and_then(|i| self.ids.get(i).copied().flatten()) {
            self.pending.add(id, delta);
        }
    }

    /// How long an admission waited for the service.
    pub fn latency(&self, host: &mut dyn Host, ms: u64) {
        if let Some(id) = self.latency {
            self.pending.record(host, id, ms);
        }
    }
}
