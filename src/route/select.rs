//! Selection strategies: each orders the candidate pool, the chosen target first.

use crate::config::plan::Target;
use crate::config::raw::Strategy;

/// The sources of choice a strategy may need: randomness for `weighted`, a counter shared by
/// all Envoy workers for `round_robin`.
pub trait Chooser {
    fn random(&mut self) -> u64;
    /// Returns the next turn for `key` (0, 1, 2, ...), counted across workers where possible.
    fn next_turn(&mut self, key: &str) -> u64;
}

/// Orders `pool` by `strategy`. `least_busy` and `lowest_latency` need live health counters;
/// until those exist they keep the configured (priority) order.
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
