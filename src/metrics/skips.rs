//! Capability skips, per target and reason: `llm_router.target.<label>.capability_skips.<reason>`
//! (counters), where `<reason>` is the capability the target lacked for the request
//! (`context_window`, `max_output_tokens`, `vision`, `tools`, `json_output`,
//! `structured_outputs`, `streaming`; see `route::capable`). Defined once per configuration for
//! every target (with the same label as its other stats), counted once per request that
//! skipped the target. With the `reason` `stats_tags` entry they reach Prometheus as
//! `llm_router_target_capability_skips{target="<t>",reason="<reason>"}`.

use std::collections::HashMap;
use std::rc::Rc;

use super::{Pending, PREFIX};
use crate::config::capabilities::Capability;
use crate::host::{Host, MetricKind};

/// Prometheus label name of the reason (`stats_tags` entry in the bootstrap).
pub const TAG_REASON: &str = "reason";

/// `stats_tags` regex of the `reason` label: the first group (the dot and the reason) is
/// removed from the name, the second is the value.
pub const TAG_REGEX_REASON: &str = "^wasmcustom\\.llm_router\\.target\\..+\\.capability_skips(\\.(context_window|max_output_tokens|vision|tools|json_output|structured_outputs|streaming))$";

/// The stat name of a target label (already sanitized) and reason, without `wasmcustom.`.
pub fn stat_name(label: &str, reason: Capability) -> String {
    format!("{PREFIX}.target.{label}.capability_skips.{}", reason.name())
}

/// Metric ids by target key and [`Capability::slot`].
#[derive(Debug, Default)]
pub struct SkipStats {
    ids: HashMap<String, [Option<u32>; Capability::ALL.len()]>,
    pending: Rc<Pending>,
}

impl SkipStats {
    /// Defines the counters of every target, given as (health key, label). A stat the host
    /// refuses is left out (one warning for all of them).
    pub fn define<'a>(
        targets: impl Iterator<Item = (&'a str, &'a str)>,
        host: &mut dyn Host,
        pending: Rc<Pending>,
    ) -> SkipStats {
        let mut ids = HashMap::new();
        let mut failed = 0usize;
        for (key, label) in targets {
            let per = Capability::ALL.map(|reason| {
                let name = stat_name(label, reason);
                match host.define_metric(MetricKind::Counter, &name) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        log::debug!("llm-router: cannot define stat {name}: {e}");
                        failed += 1;
                        None
                    }
                }
            });
            ids.insert(key.to_owned(), per);
        }
        if failed > 0 {
            log::warn!("llm-router: {failed} capability-skip stats could not be defined");
        }
        SkipStats { ids, pending }
    }

    /// How many stats were defined.
    pub fn defined(&self) -> usize {
        self.ids
            .values()
            .map(|ids| ids.iter().flatten().count())
            .sum()
    }

    /// The target with this health key was skipped for lacking `reason`.
    pub fn count(&self, key: &str, reason: Capability) {
        let id = self
            .ids
            .get(key)
            .and_then(|ids| ids.get(reason.slot()).copied().flatten());
        if let Some(id) = id {
            self.pending.add(id, 1);
        }
    }
}
