//! Selection strategies: each orders the candidate pool, the chosen target first.

use std::cmp::Ordering;

use crate::config::capabilities::Capability;
use crate::config::plan::Target;
use crate::config::raw::Strategy;
use crate::health::{Availability, Budget};

/// What routing knows of one target's health (read from the shared health board).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetStatus {
    pub availability: Availability,
    /// Requests in flight, for `least_busy`.
    pub in_flight: u32,
    /// Latency average in ms, for `lowest_latency`; `None` before the first sample.
    pub latency_ms: Option<u64>,
}

impl TargetStatus {
    /// Health not tracked or not readable: available, idle, no samples.
    pub const UNKNOWN: TargetStatus = TargetStatus {
        availability: Availability::Available,
        in_flight: 0,
        latency_ms: None,
    };
}

/// The sources of choice a strategy may need: randomness for `weighted`, a counter shared by
/// all Envoy workers for `round_robin`, and the targets' health (the health view).
pub trait Chooser {
    fn random(&mut self) -> u64;
    /// Returns the next turn for `key` (0, 1, 2, ...), counted across workers where possible.
    fn next_turn(&mut self, key: &str) -> u64;
    /// The health of the target with this health-board key and budget, now. `None` when
    /// health is not tracked or could not be read: the target then counts as available.
    fn health(&mut self, _key: &str, _budget: &Budget) -> Option<TargetStatus> {
        None
    }
    /// The target with this health-board key was skipped: it lacks `capability` for this
    /// request (counted in stats).
    fn skipped(&mut self, _key: &str, _capability: Capability) {}
}

/// Orders `pool` (usable targets with their health) by `strategy`: `least_busy` by fewest
/// requests in flight, `lowest_latency` by latency average with targets that have no sample
/// yet first (so that they get measured); ties keep the configured order. The other
/// strategies are [`order`]'s.
pub fn order_with_health<'t>(
    strategy: Strategy,
    pool: &[(&'t Target, TargetStatus)],
    key: &str,
    prompt_tokens: u64,
    output_tokens: u64,
    chooser: &mut dyn Chooser,
) -> Vec<&'t Target> {
    let mut with: Vec<(&'t Target, TargetStatus)> = pool.to_vec();
    match strategy {
        Strategy::LeastBusy => {
            with.sort_by_key(|(_, s)| s.in_flight);
            with.into_iter().map(|(t, _)| t).collect()
        }
        Strategy::LowestLatency => {
            with.sort_by(|(_, a), (_, b)| match (a.latency_ms, b.latency_ms) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => x.cmp(&y),
            });
            with.into_iter().map(|(t, _)| t).collect()
        }
        _ => {
            let targets: Vec<&'t Target> = with.iter().map(|(t, _)| *t).collect();
            order(
                strategy,
                &targets,
                key,
                prompt_tokens,
                output_tokens,
                chooser,
            )
        }
    }
}

/// Orders `pool` by `strategy`. `least_busy` and `lowest_latency` need health counters
/// ([`order_with_health`]); here they keep the configured (priority) order.
pub fn order<'t>(
    strategy: Strategy,
    pool: &[&'t Target],
    key: &str,
    prompt_tokens: u64,
    output_tokens: u64,
    chooser: &mut dyn Chooser,
) -> Vec<&'t Target> {
    let mut out: Vec<&'t Target> = pool.to_vec();
    if out.len() < 2 {
        return out;
    }
    match strategy {
        Strategy::Priority | Strategy::LeastBusy | Strategy::LowestLatency => {}
        Strategy::Weighted => {
            let total: u64 = out.iter().map(|t| u64::from(t.weight)).sum();
            if total > 0 {
                let mut ticket = chooser.random() % total;
                let mut chosen = 0;
                for (i, t) in out.iter().enumerate() {
                    let w = u64::from(t.weight);
                    if ticket < w {
                        chosen = i;
                        break;
                    }
                    ticket -= w;
                }
                let t = out.remove(chosen);
                out.insert(0, t);
            }
        }
        Strategy::RoundRobin => {
            let n = out.len() as u64;
            let turn = (chooser.next_turn(key) % n) as usize;
            out.rotate_left(turn);
        }
        Strategy::Cheapest => {
            // Stable: equal costs keep their configured order.
            out.sort_by(|a, b| {
                cost(a, prompt_tokens, output_tokens).total_cmp(&cost(
                    b,
                    prompt_tokens,
                    output_tokens,
                ))
            });
        }
    }
    out
}

/// Estimated cost of the request on `t`, in the configured price units.
pub fn cost(t: &Target, prompt_tokens: u64, output_tokens: u64) -> f64 {
    match t.price {
        Some(p) => (p.input * prompt_tokens as f64 + p.output * output_tokens as f64) / 1_000_000.0,
        None => f64::INFINITY,
    }
}
