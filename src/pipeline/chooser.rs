//! The request filter's sources of choice for routing ([`Chooser`]): randomness from a
//! per-request seed, round-robin turns and target health from Envoy shared data.

use crate::config::capabilities::Capability;
use crate::config::plan::Plan;
use crate::health::{Budget, HealthBoard, TargetHealth};
use crate::host::shared::Read;
use crate::host::{shared_increment, Host};
use crate::metrics::Metrics;
use crate::route::{Chooser, TargetStatus};

/// What the chooser needs to read health from the board.
pub(crate) struct HealthRead<'p> {
    pub(crate) board: HealthBoard,
    pub(crate) plan: &'p Plan,
    pub(crate) now_ms: u64,
}

/// Randomness from a per-request seed; round-robin turns from shared data so that all
/// workers take turns together (a local counter if shared data fails); target health from
/// the shared health board; capability skips counted in stats.
pub(crate) struct HostChooser<'h, 'p> {
    pub(crate) host: &'h mut dyn Host,
    pub(crate) rng: u64,
    pub(crate) health: Option<HealthRead<'p>>,
    /// A health read failed.
    pub(crate) degraded: bool,
    /// The states read, by key, with their tokens: admission writes the chosen one without
    /// reading it again.
    pub(crate) seen: Vec<(String, Read<TargetHealth>)>,
    pub(crate) metrics: Option<&'p Metrics>,
}

impl Chooser for HostChooser<'_, '_> {
    fn health(&mut self, key: &str, budget: &Budget) -> Option<TargetStatus> {
        let read = self.health.as_ref()?;
        match read.board.read_for_update(&*self.host, key) {
            Ok(r) => {
                let h = &read.board.with_waiting(key, r.record);
                let status = TargetStatus {
                    availability: h.availability(read.now_ms, &read.plan.health.policy, budget),
                    in_flight: h.in_flight,
                    latency_ms: h.latency_ms(),
                };
                self.seen.push((key.to_owned(), r));
                Some(status)
            }
            Err(e) => {
                self.degraded = true;
                log::debug!("llm-router: routing without health: {e}");
                None
            }
        }
    }

    fn skipped(&mut self, key: &str, capability: Capability) {
        if let Some(m) = self.metrics {
            m.skips.count(key, capability);
        }
    }

    fn random(&mut self) -> u64 {
        // splitmix64: good spread from any seed, including small ones.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_turn(&mut self, key: &str) -> u64 {
        let shared_key = format!("llm_router.rr.{key}");
        match shared_increment(self.host, &shared_key) {
            Some(turn) => turn,
            None => self.random(),
        }
    }
}
