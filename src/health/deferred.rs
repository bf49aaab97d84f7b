//! Not used by the filter today: any client may sort by load or latency (`provider.sort`),
//! so every worker must see each request end at once (a finish that waited made
//! `test_routing.py::test_provider_sort` route on a stale in-flight count); a finish is
//! written at once unless a flow is built `with_deferred_health`. Kept for a per-target
//! opt-in where nothing compares load.
//!
//! Finishes that can wait: the end of a request that changes nothing another worker decides
//! on (a success or a cancel, not a probe, no tokens for a tokens-per-minute budget) is kept in
//! this worker's VM and written with the next write this worker makes to the same target
//! (its next admission, a failure) or on the root context's tick, whichever comes first. A
//! routed request then writes the board once (at admission) instead of twice, and the shared
//! data lock is taken half as often. Failures, rate limits and probe verdicts are written at
//! once: cooldowns are seen by every worker right away.
//!
//! What waits, at most one tick: `in_flight` going down, the success counts, the latency
//! averages and the success in the failure-rate window (a failure written meanwhile by another
//! worker sees up to a tick's worth of this worker's successes missing). Bounded: at most
//! [`MAX_PER_TARGET`] finishes wait per target; one more is written at once with them.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::state::{HealthPolicy, Outcome, TargetHealth};

/// Most finishes kept per target between two writes.
pub const MAX_PER_TARGET: usize = 64;

/// This worker's finishes not yet written, by health key.
#[derive(Debug, Default)]
pub struct Deferred {
    policy: HealthPolicy,
    by_key: RefCell<BTreeMap<String, Vec<(Outcome, u64)>>>,
}

/// Whether the end of a request may wait (see the module docs). `tpm_budget`: the target
/// has a tokens-per-minute budget, which the tokens of a success count against;
/// `load_aware`: routing compares its in-flight count or latency.
pub fn can_wait(outcome: &Outcome, probe: bool, tpm_budget: bool, load_aware: bool) -> bool {
    if probe || load_aware {
        return false;
    }
    match outcome {
        Outcome::Success { tokens, .. } => *tokens == 0 || !tpm_budget,
        Outcome::Cancelled => true,
        _ => false,
    }
}

impl Deferred {
    /// Finishes are applied with `policy` (the configuration's).
    pub fn new(policy: HealthPolicy) -> Deferred {
        Deferred {
            policy,
            by_key: RefCell::default(),
        }
    }

    /// Keeps the finish of a request to `key` at `now_ms`; false when the target already
    /// has [`MAX_PER_TARGET`] waiting (write now).
    pub fn keep(&self, key: &str, outcome: Outcome, now_ms: u64) -> bool {
        let Ok(mut by_key) = self.by_key.try_borrow_mut() else {
            return false;
        };
        let list = by_key.entry(key.to_owned()).or_default();
        if list.len() >= MAX_PER_TARGET {
            return false;
        }
        list.push((outcome, now_ms));
        true
    }

    /// Takes what waits for `key` (put it back with [`Deferred::put_back`] if the write fails).
    pub fn take(&self, key: &str) -> Vec<(Outcome, u64)> {
        self.by_key
            .try_borrow_mut()
            .ok()
            .and_then(|mut m| m.remove(key))
            .unwrap_or_default()
    }

    /// Returns finishes a failed write did not store, before any kept since.
    pub fn put_back(&self, key: &str, mut finishes: Vec<(Outcome, u64)>) {
        if finishes.is_empty() {
            return;
        }
        if let Ok(mut by_key) = self.by_key.try_borrow_mut() {
            let list = by_key.entry(key.to_owned()).or_default();
            finishes.append(list);
            finishes.truncate(MAX_PER_TARGET);
            *list = finishes;
        }
    }

    /// Applies taken finishes to a target's state, oldest first.
    pub fn apply(&self, finishes: &[(Outcome, u64)], h: &mut TargetHealth) {
        for (outcome, now_ms) in finishes {
            h.on_finish(*outcome, false, *now_ms, &self.policy);
        }
    }

    /// Applies what waits for `key` to a state read from the board, without taking it: this
    /// worker's own view is exact; other workers see it with the next write.
    pub fn apply_waiting(&self, key: &str, h: &mut TargetHealth) {
        if let Ok(by_key) = self.by_key.try_borrow() {
            if let Some(list) = by_key.get(key) {
                self.apply(list, h);
            }
        }
    }

    /// The targets with finishes waiting.
    pub fn keys(&self) -> Vec<String> {
        self.by_key
            .try_borrow()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthBoard;
    use crate::host::mock::MockHost;
    use std::rc::Rc;

    const KEY: &str = "llm_router.h.a/m";

    fn success() -> Outcome {
        Outcome::Success {
            latency_ms: 40,
            ttfb_ms: Some(10),
            tokens: 0,
        }
    }

    fn board() -> (HealthBoard, Rc<Deferred>) {
        let deferred = Rc::new(Deferred::new(HealthPolicy::default()));
        (
            HealthBoard::default().with_deferred(Rc::clone(&deferred)),
            deferred,
        )
    }

    fn started(host: &mut MockHost, board: &HealthBoard, n: usize) {
        for _ in 0..n {
            board.update(host, KEY, |h| h.on_start(1_000, 0)).unwrap();
        }
    }

    #[test]
    fn only_what_no_other_worker_decides_on_waits() {
        assert!(can_wait(&success(), false, false, false));
        assert!(can_wait(&Outcome::Cancelled, false, true, false));
        assert!(
            !can_wait(&success(), true, false, false),
            "a probe's verdict"
        );
        assert!(
            !can_wait(&success(), false, false, true),
            "least_busy, lowest_latency"
        );
        let tokens = Outcome::Success {
            latency_ms: 1,
            ttfb_ms: None,
            tokens: 9,
        };
        assert!(can_wait(&tokens, false, false, false));
        assert!(
            !can_wait(&tokens, false, true, false),
            "tokens for a tpm budget"
        );
        for failure in [
            Outcome::Status5xx,
            Outcome::ConnectFailure,
            Outcome::Timeout,
            Outcome::RateLimited { until_ms: None },
            Outcome::RateLimited {
                until_ms: Some(5_000),
            },
        ] {
            assert!(!can_wait(&failure, false, false, false), "{failure:?}");
        }
    }

    #[test]
    fn a_success_waits_for_the_next_write_of_its_target() {
        let mut host = MockHost::default();
        let (board, deferred) = board();
        let policy = HealthPolicy::default();
        started(&mut host, &board, 2);
        let writes = host.shared.get(KEY).map(|(_, cas)| *cas);
        assert_eq!(
            board.finish(&mut host, KEY, success(), false, 1_050, &policy, true),
            Ok(false)
        );
        assert_eq!(
            host.shared.get(KEY).map(|(_, cas)| *cas),
            writes,
            "nothing written"
        );
        assert_eq!(board.read(&host, KEY).unwrap().in_flight, 2);
        // This worker's view has it.
        let own = board.with_waiting(KEY, board.read(&host, KEY).unwrap());
        assert_eq!((own.in_flight, own.latency_ms()), (1, Some(40)));
        // The next admission of this worker writes it with its own change.
        started(&mut host, &board, 1);
        let h = board.read(&host, KEY).unwrap();
        assert_eq!((h.in_flight, h.successes, h.latency_ms()), (2, 1, Some(40)));
        assert!(deferred.keys().is_empty());
    }

    #[test]
    fn a_failure_is_written_at_once_after_the_successes_that_waited() {
        let mut host = MockHost::default();
        let (board, _) = board();
        let policy = HealthPolicy::default();
        started(&mut host, &board, 2);
        board
            .finish(&mut host, KEY, success(), false, 1_050, &policy, true)
            .unwrap();
        board
            .finish(
                &mut host,
                KEY,
                Outcome::Status5xx,
                false,
                1_060,
                &policy,
                false,
            )
            .unwrap();
        let h = board.read(&host, KEY).unwrap();
        assert_eq!(
            (
                h.in_flight,
                h.successes,
                h.failures_5xx,
                h.consecutive_failures
            ),
            (0, 1, 1, 1)
        );
    }

    #[test]
    fn the_tick_writes_what_waits_and_a_failed_write_keeps_it() {
        let mut host = MockHost::default();
        let (board, deferred) = board();
        let policy = HealthPolicy::default();
        started(&mut host, &board, 1);
        board
            .finish(
                &mut host,
                KEY,
                Outcome::Cancelled,
                false,
                1_010,
                &policy,
                true,
            )
            .unwrap();
        host.shared_data_fails = true;
        board.flush_deferred(&mut host);
        assert_eq!(deferred.keys(), [KEY], "kept for the next tick");
        host.shared_data_fails = false;
        board.flush_deferred(&mut host);
        let h = board.read(&host, KEY).unwrap();
        assert_eq!((h.in_flight, h.cancelled), (0, 1));
        assert!(deferred.keys().is_empty());
    }

    #[test]
    fn a_target_keeps_a_bounded_number_waiting() {
        let mut host = MockHost::default();
        let (board, deferred) = board();
        let policy = HealthPolicy::default();
        let n = MAX_PER_TARGET + 1;
        started(&mut host, &board, n);
        for _ in 0..n {
            board
                .finish(&mut host, KEY, success(), false, 1_100, &policy, true)
                .unwrap();
        }
        // The one over the bound was written, with all that waited.
        let h = board.read(&host, KEY).unwrap();
        assert_eq!((h.in_flight, h.successes), (0, n as u64));
        assert!(deferred.keys().is_empty());
        // A board without `deferred` writes every finish.
        let plain = HealthBoard::default();
        started(&mut host, &plain, 1);
        plain
            .finish(&mut host, KEY, success(), false, 1_200, &policy, true)
            .unwrap();
        assert_eq!(plain.read(&host, KEY).unwrap().in_flight, 0);
    }
}
