//! Per-client Envoy stats: `llm_router.client.<name>.<stat>` (counters), defined once per
//! configuration, and `llm_router.clients.unauthorized`. Labelled by the client's name only:
//! a key never reaches a stat.

use std::rc::Rc;

use super::ClientsPlan;
use crate::host::{Host, MetricKind};
use crate::metrics::{label, saturating_i64, Pending};

/// The stats of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStat {
    /// Requests admitted (sent on).
    Requests,
    /// Requests refused with 429 (rpm, tpm or monthly budget).
    RateLimited,
    /// Requests refused with 403 (model not allowed).
    Forbidden,
    PromptTokens,
    CompletionTokens,
    /// Spend, in millionths of the price currency.
    CostMicro,
}

impl ClientStat {
    pub const ALL: [ClientStat; 6] = [
        ClientStat::Requests,
        ClientStat::RateLimited,
        ClientStat::Forbidden,
        ClientStat::PromptTokens,
        ClientStat::CompletionTokens,
        ClientStat::CostMicro,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            ClientStat::Requests => "requests",
            ClientStat::RateLimited => "rate_limited",
            ClientStat::Forbidden => "forbidden",
            ClientStat::PromptTokens => "prompt_tokens",
            ClientStat::CompletionTokens => "completion_tokens",
            ClientStat::CostMicro => "cost_micro",
        }
    }
}

/// Prometheus label name of the client (`stats_tags` entry in the bootstrap).
pub const TAG_CLIENT: &str = "client";

/// `stats_tags` regex of the `client` label: first group removed from the name, second the
/// value (as for [`crate::metrics::TAG_REGEX_TARGET`]).
pub const TAG_REGEX_CLIENT: &str = "^wasmcustom\\.llm_router\\.client\\.((.+?)\\.)(?:requests|rate_limited|forbidden|prompt_tokens|completion_tokens|cost_micro)$";

/// The stat of requests refused with 401.
pub const UNAUTHORIZED_STAT: &str = "llm_router.clients.unauthorized";

/// Metric ids of every client's stats, by client index and [`ClientStat::ALL`] slot.
#[derive(Debug, Default)]
pub struct ClientStats {
    ids: Vec<[Option<u32>; ClientStat::ALL.len()]>,
    unauthorized: Option<u32>,
    pending: Rc<Pending>,
}

impl ClientStats {
    /// Defines the stats of every configured client (`on_configure`); a stat the host
    /// refuses is left out.
    pub fn define(plan: &ClientsPlan, host: &mut dyn Host, pending: Rc<Pending>) -> ClientStats {
        let mut define = |name: String| match host.define_metric(MetricKind::Counter, &name) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("llm-router: cannot define stat {name}: {e}");
                None
            }
        };
        let ids = plan
            .clients
            .iter()
            .map(|c| {
                let label = label(&c.name);
                ClientStat::ALL
                    .map(|stat| define(format!("llm_router.client.{label}.{}", stat.suffix())))
            })
            .collect();
        ClientStats {
            ids,
            unauthorized: define(UNAUTHORIZED_STAT.to_owned()),
            pending,
        }
    }

    /// Adds `delta` to a client's counter (nothing for 0).
    pub fn add(&self, client: usize, stat: ClientStat, delta: u64) {
        let slot = ClientStat::ALL.iter().position(|s| *s == stat);
        let id = slot.and_then(|i| self.ids.get(client)?.get(i).copied().flatten());
        if let Some(id) = id {
            self.pending.add(id, saturating_i64(delta));
        }
    }

    /// A request refused with 401.
    pub fn unauthorized(&self) {
        if let Some(id) = self.unauthorized {
            self.pending.add(id, 1);
        }
    }
}
