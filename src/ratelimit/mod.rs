//! Limits across a fleet of Envoys: client limits and target budgets checked and charged at
//! Envoy's global rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`, served by
//! Limitador or envoyproxy/ratelimit) instead of this Envoy's shared data.
//!
//! - [`ServicePlan`]: the compiled `rate_limit_service` section.
//! - [`checks`]: what a request asks of the service, one descriptor per call (a call has one
//!   `hits_addend` for all its descriptors): at admission its request, its prompt estimate
//!   and its estimated spend; at the end the usage beyond the estimate and the rest of the
//!   spend.
//! - [`proto`]: the messages on the wire.
//! - [`verdict`]: the service's answers to a request's calls, as one admission.

pub mod checks;
pub mod definitions;
pub mod proto;
pub mod stats;
pub mod verdict;

use std::collections::HashMap;

use crate::config::plan::is_header_value_safe;
use crate::config::raw::{FailureMode, RawRateLimitService, UsageReport};
use crate::config::ConfigError;
use crate::health::Budget;
use crate::host::GrpcCall;

pub use checks::{Check, LimitKind};
pub use verdict::Verdict;

pub const DEFAULT_DOMAIN: &str = "llm-router";
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
const MAX_TIMEOUT_MS: u32 = 10_000;
/// The longest cluster name: the gRPC service message is sent as the host call's upstream.
const MAX_CLUSTER_BYTES: usize = 120;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";
pub const KUADRANT_SERVICE: &str = "kuadrant.service.ratelimit.v1.RateLimitService";
pub const KUADRANT_REPORT: &str = "Report";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u32,
    pub failure_mode: FailureMode,
    pub usage_report: UsageReport,
    /// The serialized `envoy.config.core.v3.GrpcService` naming the cluster: what the host's
    /// gRPC call takes as its upstream (a bare name is parsed as one first).
    pub grpc_service: Vec<u8>,
    /// The targets' budgets, by target key (taken out of the health board's plan).
    pub target_budgets: HashMap<String, Budget>,
}

impl ServicePlan {
    pub fn compile(raw: &RawRateLimitService, field: &str) -> Result<ServicePlan, ConfigError> {
        let cluster = &raw.cluster;
        if cluster.is_empty()
            || cluster.len() > MAX_CLUSTER_BYTES
            || !cluster.is_ascii()
            || !is_header_value_safe(cluster)
        {
            return Err(ConfigError::new(
                format!("{field}.cluster"),
                format!("must be an Envoy cluster name: 1 to {MAX_CLUSTER_BYTES} ASCII characters, no control characters"),
            ));
        }
        let domain = raw.domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
        if domain.is_empty() || domain.len() > 64 || !domain.bytes().all(is_name_byte) {
            return Err(ConfigError::new(
                format!("{field}.domain"),
                "must be 1 to 64 of A-Z a-z 0-9 . _ -",
            ));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ConfigError::new(
                format!("{field}.timeout_ms"),
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        Ok(ServicePlan {
            cluster: cluster.clone(),
            domain: domain.to_owned(),
            timeout_ms,
            failure_mode: raw.failure_mode,
            usage_report: raw.usage_report,
            grpc_service: proto::grpc_service(cluster),
            target_budgets: HashMap::new(),
        })
    }

    pub fn with_budgets(mut self, budgets: HashMap<String, Budget>) -> ServicePlan {
        self.target_budgets = budgets;
        self
    }

    /// The budget of the target with this key, if it has one.
    pub fn budget(&self, key: &str) -> Option<&Budget> {
        self.target_budgets.get(key)
    }

    /// The gRPC call of one check to `service`/`method` of this service.
    pub fn call<'a>(
        &'a self,
        (service, method): (&'a str, &'a str),
        check: &'a Check,
    ) -> GrpcCall<'a> {
        GrpcCall {
            upstream: &self.grpc_service,
            service,
            method,
            message: &check.message,
            timeout_ms: self.timeout_ms,
        }
    }

    /// The service and method usage reports go to.
    pub fn report_method(&self) -> (&'static str, &'static str) {
        match self.usage_report {
            UsageReport::ShouldRateLimit => (SERVICE, METHOD),
            UsageReport::Kuadrant => (KUADRANT_SERVICE, KUADRANT_REPORT),
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests;
