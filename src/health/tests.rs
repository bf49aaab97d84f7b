use std::collections::HashMap;

use super::board::{BoardError, HealthBoard, CREATE_CAS, KEY_PREFIX};
use super::codec::{decode, encode, ENCODED_LEN, VERSION};
use super::ewma::{Alpha, Ewma};
use super::retry_headers::{
    cooldown_until, parse_go_duration, parse_http_date, parse_reset, parse_retry_after,
    parse_rfc3339, DEFAULT_MAX_COOLDOWN_MS,
};
use super::state::{
    soonest, Admission, Availability, Budget, Circuit, HealthPolicy, Outcome, TargetHealth,
    Unhealthy, BUDGET_BUCKET_MS,
};
use super::window::{Field, Totals, Window, BUCKETS};
use crate::host::mock::MockHost;
use crate::host::{Host, HostError, HostResult, CAS_RETRIES};

/// 2025-01-01T00:00:00Z, a realistic clock.
const T0: u64 = 1_735_689_600_000;

fn ok(latency_ms: u64) -> Outcome {
    Outcome::Success {
        latency_ms,
        ttfb_ms: Some(latency_ms / 2),
        tokens: 0,
    }
}

fn no_budget() -> Budget {
    Budget::default()
}

fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Starts and finishes one request with `outcome` at `now`.
fn run(h: &mut TargetHealth, outcome: Outcome, now: u64, policy: &HealthPolicy) {
    h.on_start(now, 0);
    h.on_finish(outcome, false, now, policy);
}

// ---------------------------------------------------------------------------------------
// EWMA
// ---------------------------------------------------------------------------------------

#[test]
fn ewma_first_sample_initialises() {
    let mut e = Ewma::default();
    assert_eq!(e.get(), None);
    assert_eq!(e.get_f64(), None);
    e.update(250, Alpha::from_permille(100));
    assert_eq!(e.get(), Some(250));
    assert_eq!(e.parts(), (250_000, true));
}

#[test]
fn ewma_moves_by_alpha() {
    let half = Alpha::from_permille(500);
    let mut e = Ewma::default();
    e.update(100, half);
    e.update(200, half);
    assert_eq!(e.get(), Some(150));
    e.update(50, half);
    assert_eq!(e.get(), Some(100));

    // Default 0.2: 100 then 0 gives 80.
    let mut d = Ewma::default();
    d.update(100, Alpha::default());
    d.update(0, Alpha::default());
    assert_eq!(d.get(), Some(80));
    d.update(0, Alpha::default());
    assert_eq!(d.get(), Some(64));

    // Alpha 1 keeps only the last sample.
    let mut last = Ewma::default();
    for s in [5, 900, 17] {
        last.update(s, Alpha::from_permille(1000));
    }
    assert_eq!(last.get(), Some(17));
}

#[test]
fn ewma_keeps_fractions_and_rounds() {
    let mut e = Ewma::default();
    e.update(1, Alpha::from_permille(500));
    e.update(2, Alpha::from_permille(500));
    assert_eq!(e.get_f64(), Some(1.5));
    assert_eq!(e.get(), Some(2)); // 1.5 rounds half up
    e.update(1, Alpha::from_permille(500));
    assert_eq!(e.get_f64(), Some(1.25));
    assert_eq!(e.get(), Some(1));
}

#[test]
fn ewma_converges_and_saturates() {
    let mut e = Ewma::default();
    e.update(10_000, Alpha::default());
    for _ in 0..200 {
        e.update(42, Alpha::default());
    }
    assert_eq!(e.get(), Some(42));
    let mut big = Ewma::default();
    big.update(u64::MAX, Alpha::default());
    big.update(u64::MAX, Alpha::default());
    big.update(0, Alpha::default());
    assert!(big.get().is_some());
}

#[test]
fn alpha_is_clamped() {
    assert_eq!(Alpha::from_permille(0).permille(), 1);
    assert_eq!(Alpha::from_permille(5000).permille(), 1000);
    assert_eq!(Alpha::from_f64(0.3).permille(), 300);
    assert_eq!(Alpha::from_f64(7.0).permille(), 1000);
    assert_eq!(Alpha::from_f64(-1.0).permille(), 1);
    assert_eq!(Alpha::from_f64(f64::NAN), Alpha::DEFAULT);
    assert_eq!(Ewma::from_parts(77, false), Ewma::default());
}

// ---------------------------------------------------------------------------------------
// Sliding window
// ---------------------------------------------------------------------------------------

const B: u64 = 10_000; // bucket width in these tests

#[test]
fn window_counts_within_the_window() {
    let mut w = Window::default();
    w.record(T0, B, 1, 0, 100);
    w.record(T0 + 5_000, B, 1, 1, 50);
    w.record(T0 + 25_000, B, 2, 0, 0);
    assert_eq!(
        w.totals(T0 + 25_000, B),
        Totals {
            requests: 4,
            failures: 1,
            tokens: 150
        }
    );
}

#[test]
fn window_rotation_drops_old_buckets() {
    let mut w = Window::default();
    for i in 0..BUCKETS as u64 {
        w.record(T0 + i * B, B, 1, 0, 0);
    }
    assert_eq!(w.totals(T0 + 5 * B, B).requests, 6);
    // One bucket later the first one is gone, read-only and after rotating.
    assert_eq!(w.totals(T0 + 6 * B, B).requests, 5);
    w.record(T0 + 6 * B, B, 1, 0, 0);
    assert_eq!(w.totals(T0 + 6 * B, B).requests, 6);
    assert_eq!(w.totals(T0 + 8 * B, B).requests, 4);
}

#[test]
fn window_gap_longer_than_window_clears() {
    let mut w = Window::default();
    w.record(T0, B, 5, 5, 5);
    assert_eq!(w.totals(T0 + 6 * B, B), Totals::default());
    w.record(T0 + 100 * B, B, 1, 0, 0);
    assert_eq!(w.totals(T0 + 100 * B, B).requests, 1);
    w.record(u64::MAX, B, 1, 0, 0);
    assert_eq!(w.totals(u64::MAX, B).requests, 1);
}

#[test]
fn window_time_going_backwards_does_not_panic() {
    let mut w = Window::default();
    w.record(T0 + 3 * B, B, 1, 0, 0);
    // A little back (another worker's clock): counted in the newest bucket.
    w.record(T0 + B, B, 1, 0, 0);
    assert_eq!(w.totals(T0 + 3 * B, B).requests, 2);
    assert_eq!(w.totals(T0, B).requests, 2);
    // A whole window back: starts afresh.
    w.record(T0 - 10 * B, B, 1, 0, 0);
    assert_eq!(w.totals(T0 - 10 * B, B).requests, 1);
    // Back to 0 and silly widths.
    w.record(0, 0, 1, 0, 0);
    w.record(0, 1, 1, 0, 0);
    assert!(w.totals(0, 0).requests >= 1);
    let _ = w.recovery_ms(0, 0, Field::Requests, 1);
}

#[test]
fn window_saturates() {
    let mut w = Window::default();
    w.record(T0, B, u32::MAX, u32::MAX, u64::MAX);
    w.record(T0, B, 7, 7, 7);
    let t = w.totals(T0, B);
    assert_eq!(t.requests, u64::from(u32::MAX));
    assert_eq!(t.tokens, u64::from(u32::MAX));
}

#[test]
fn window_recovery_time() {
    let mut w = Window::default();
    // Buckets at T0 (2 requests), T0+10s (1), T0+20s (1).
    w.record(T0, B, 2, 0, 0);
    w.record(T0 + B, B, 1, 0, 0);
    w.record(T0 + 2 * B, B, 1, 0, 0);
    let now = T0 + 2 * B + 1;
    // Below the limit: no recovery needed.
    assert_eq!(w.recovery_ms(now, B, Field::Requests, 5), None);
    assert_eq!(w.recovery_ms(now, B, Field::Requests, 0), None);
    // Limit 4: back under it when the T0 bucket slides out, one window after it began.
    assert_eq!(w.recovery_ms(now, B, Field::Requests, 4), Some(T0 + 6 * B));
    // Limit 2: needs the T0 and T0+10s buckets gone.
    assert_eq!(w.recovery_ms(now, B, Field::Requests, 2), Some(T0 + 7 * B));
    // Limit 1: everything gone.
    assert_eq!(w.recovery_ms(now, B, Field::Requests, 1), Some(T0 + 8 * B));
}

// ---------------------------------------------------------------------------------------
// Cooldown and circuit
// ---------------------------------------------------------------------------------------

#[test]
fn cooldown_after_more_than_allowed_consecutive_failures() {
    let p = HealthPolicy::default();
    let mut h = TargetHealth::default();
    for i in 0..3 {
        run(&mut h, Outcome::Status5xx, T0 + i, &p);
        assert_eq!(h.circuit, Circuit::Closed, "failure {i} is allowed");
    }
    // A success resets the streak.
    run(&mut h, ok(10), T0 + 3, &p);
    assert_eq!(h.consecutive_failures, 0);
    for i in 0..3 {
        run(&mut h, Outcome::ConnectFailure, T0 + 10 + i, &p);
    }
    assert_eq!(
        h.availability(T0 + 12, &p, &no_budget()),
        Availability::Available
    );
    run(&mut h, Outcome::Timeout, T0 + 13, &p);
    assert_eq!(h.circuit, Circuit::Open);
    assert_eq!(h.cooldowns, 1);
    assert_eq!(h.cooldown_until_ms, T0 + 13 + 30_000);
    assert_eq!(
        h.availability(T0 + 14, &p, &no_budget()),
        Availability::Unavailable {
            until_ms: T0 + 30_013,
            reason: Unhealthy::CoolingDown
        }
    );
    assert_eq!(
        h.availability(T0 + 30_012, &p, &no_budget()),
        Availability::Unavailable {
            until_ms: T0 + 30_013,
            reason: Unhealthy::CoolingDown
        }
    );
    assert_eq!(
        h.availability(T0 + 30_013, &p, &no_budget()),
        Availability::Probe
    );
    assert_eq!(h.failures_5xx, 3);
    assert_eq!(h.failures_connect, 3);
    assert_eq!(h.failures_timeout, 1);
    assert_eq!(h.failures(), 7);
    assert_eq!(h.requests, 8);
    assert_eq!(h.in_flight, 0);
}

#[test]
fn allowed_fails_zero_trips_on_first_failure() {
    let p = HealthPolicy {
        allowed_fails: 0,
        ..HealthPolicy::default()
    };
    let mut h = TargetHealth::default();
    run(&mut h, Outcome::Status5xx, T0, &p);
    assert_eq!(h.circuit, Circuit::Open);
}

#[test]
fn failure_rate_trips_only_with_min_requests() {
    let p = HealthPolicy {
        allowed_fails: 100,
        failure_rate_threshold: Some(0.5),
        min_requests: 10,
        ..HealthPolicy::default()
    };
    let mut h = TargetHealth::default();
    // Alternating success / failure: 50 % failures, but the first 9 are too few to judge.
    for i in 0..9u64 {
        let o = if i % 2 == 0 {
            Outcome::Status5xx
        } else {
            ok(5)
        };
        run(&mut h, o, T0 + i * 100, &p);
        assert_eq!(h.circuit, Circuit::Closed, "request {i}");
    }
    // 10th request: 5 failures of 10 finished.
    run(&mut h, ok(5), T0 + 1_000, &p);
    assert_eq!(h.circuit, Circuit::Closed, "only failures trip");
    run(&mut h, Outcome::Status5xx, T0 + 1_100, &p);
    assert_eq!(h.circuit, Circuit::Open);
    assert_eq!(h.cooldowns, 1);
}

#[test]
fn failure_rate_below_threshold_or_off_does_not_trip() {
    let mut p = HealthPolicy {
        allowed_fails: 100,
        failure_rate_threshold: Some(0.5),
        min_requests: 4,
        ..HealthPolicy::default()
    };
    let mut h = TargetHealth::default();
    for i in 0..20u64 {
        let o = if i % 3 == 2 {
            Outcome::Status5xx
        } else {
            ok(5)
        };
        run(&mut h, o, T0 + i, &p);
    }
    assert_eq!(h.circuit, Circuit::Closed, "a third is under a half");

    p.failure_rate_threshold = None;
    let mut off = TargetHealth::default();
    for i in 0..20u64 {
        run(&mut off, Outcome::Status5xx, T0 + i, &p);
    }
    assert_eq!(off.circuit, Circuit::Closed);
}

#[test]
fn failure_rate_forgets_failures_outside_the_window() {
    let p = HealthPolicy {
        allowed_fails: 100,
        failure_rate_threshold: Some(0.5),
        min_requests: 4,
        failure_window_ms: 60_000,
        ..HealthPolicy::default()
    };
    let mut h = TargetHealth::default();
    for i in 0..3u64 {
        run(&mut h, Outcome::Status5xx, T0 + i, &p);
    }
    // Two minutes later, the old failures have slid out: 1 failure of 4 does not trip.
    let later = T0 + 120_000;
    for i in 0..3u64 {
        run(&mut h, ok(5), later + i, &p);
    }
    run(&mut h, Outcome::Status5xx, later + 10, &p);
    assert_eq!(h.circuit, Circuit::Closed);
}

fn tripped(p: &HealthPolicy) -> TargetHealth {
    let mut h = TargetHealth::default();
    for i in 0..=u64::from(p.allowed_fails) {
        run(&mut h, Outcome::Status5xx, T0 + i, p);
    }
    assert_eq!(h.circuit, Circuit::Open);
    h
}

#[test]
fn half_open_lets_exactly_one_probe_through() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    let after = h.cooldown_until_ms;
    assert!(
        !h.try_claim_probe(after - 1, &p, &no_budget()),
        "still cooling down"
    );
    assert!(h.try_claim_probe(after, &p, &no_budget()));
    assert_eq!(h.circuit, Circuit::HalfOpen);
    assert!(
        !h.try_claim_probe(after + 1, &p, &no_budget()),
        "one probe only"
    );
    assert_eq!(
        h.availability(after + 1, &p, &no_budget()),
        Availability::Unavailable {
            until_ms: after + p.probe_timeout_ms,
            reason: Unhealthy::ProbeInFlight
        }
    );
    // The probe never reports: after the probe timeout another one may go, once.
    let timeout = after + p.probe_timeout_ms;
    assert!(!h.try_claim_probe(timeout - 1, &p, &no_budget()));
    assert_eq!(
        h.availability(timeout, &p, &no_budget()),
        Availability::Probe
    );
    assert!(h.try_claim_probe(timeout, &p, &no_budget()));
    assert!(!h.try_claim_probe(timeout, &p, &no_budget()));
    assert_eq!(h.probe_started_ms, timeout);
}

#[test]
fn probe_success_closes_the_circuit() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    let after = h.cooldown_until_ms;
    assert_eq!(
        h.admit(after, &p, &no_budget(), 0),
        Admission::Admitted { probe: true }
    );
    // Others are refused while the probe is out.
    assert_eq!(
        h.admit(after + 5, &p, &no_budget(), 0),
        Admission::Refused {
            until_ms: after + p.probe_timeout_ms,
            reason: Unhealthy::ProbeInFlight
        }
    );
    h.on_finish(ok(100), true, after + 100, &p);
    assert_eq!(h.circuit, Circuit::Closed);
    assert_eq!(h.consecutive_failures, 0);
    assert_eq!(
        h.availability(after + 100, &p, &no_budget()),
        Availability::Available
    );
    // The failures before the trip do not count again: the next failures start a new streak.
    for i in 0..3 {
        run(&mut h, Outcome::Status5xx, after + 200 + i, &p);
    }
    assert_eq!(h.circuit, Circuit::Closed);
}

#[test]
fn probe_failure_opens_the_circuit_again() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    let after = h.cooldown_until_ms;
    assert_eq!(
        h.admit(after, &p, &no_budget(), 0),
        Admission::Admitted { probe: true }
    );
    h.on_finish(Outcome::ConnectFailure, true, after + 50, &p);
    assert_eq!(h.circuit, Circuit::Open);
    assert_eq!(h.cooldowns, 2);
    assert_eq!(h.cooldown_until_ms, after + 50 + p.cooldown_ms);
    assert!(!h.availability(after + 51, &p, &no_budget()).is_usable());
    assert_eq!(
        h.availability(after + 50 + p.cooldown_ms, &p, &no_budget()),
        Availability::Probe
    );
}

#[test]
fn cancelled_probe_frees_the_slot_and_is_not_a_failure() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    let after = h.cooldown_until_ms;
    assert!(h.try_claim_probe(after, &p, &no_budget()));
    h.on_start(after, 0);
    h.on_finish(Outcome::Cancelled, true, after + 10, &p);
    assert_eq!(h.cancelled, 1);
    assert_eq!(h.cooldowns, 1);
    assert_eq!(
        h.availability(after + 10, &p, &no_budget()),
        Availability::Probe
    );
}

#[test]
fn non_probe_results_do_not_decide_an_open_circuit() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    // A request that started before the trip finishes fine: still open.
    h.on_finish(ok(5), false, T0 + 100, &p);
    assert_eq!(h.circuit, Circuit::Open);
    // And a late failure does not extend the cooldown.
    let until = h.cooldown_until_ms;
    h.on_finish(Outcome::Status5xx, false, T0 + 200, &p);
    assert_eq!(h.cooldown_until_ms, until);
    assert_eq!(h.cooldowns, 1);
    // Resolving a closed circuit is a no-op.
    let mut fresh = TargetHealth::default();
    fresh.resolve_probe(false, T0, &p);
    assert_eq!(fresh.circuit, Circuit::Closed);
}

#[test]
fn in_flight_never_underflows() {
    let p = HealthPolicy::default();
    let mut h = TargetHealth::default();
    h.on_finish(ok(1), false, T0, &p);
    h.on_finish(Outcome::Cancelled, false, T0, &p);
    assert_eq!(h.in_flight, 0);
    h.on_start(T0, 0);
    h.on_start(T0, 0);
    assert_eq!(h.in_flight, 2);
    h.on_finish(ok(1), false, T0, &p);
    assert_eq!(h.in_flight, 1);
    h.in_flight = u32::MAX;
    h.on_start(T0, 0);
    assert_eq!(h.in_flight, u32::MAX);
}

#[test]
fn success_feeds_the_averages() {
    let p = HealthPolicy {
        alpha: Alpha::from_permille(500),
        ..HealthPolicy::default()
    };
    let mut h = TargetHealth::default();
    assert_eq!(h.latency_ms(), None);
    run(&mut h, ok(100), T0, &p);
    run(&mut h, ok(300), T0, &p);
    assert_eq!(h.latency_ms(), Some(200));
    assert_eq!(h.ttfb_ms(), Some(100));
    run(
        &mut h,
        Outcome::Success {
            latency_ms: 200,
            ttfb_ms: None,
            tokens: 0,
        },
        T0,
        &p,
    );
    assert_eq!(h.ttfb_ms(), Some(100), "no TTFB sample, no change");
    assert_eq!(h.successes, 3);
}

#[test]
fn rate_limit_with_reset_cools_down_exactly_and_not_as_a_failure() {
    let p = HealthPolicy::default();
    let mut h = TargetHealth::default();
    for _ in 0..10 {
        run(
            &mut h,
            Outcome::RateLimited {
                until_ms: Some(T0 + 2_000),
            },
            T0,
            &p,
        );
    }
    assert_eq!(h.failures_429, 10);
    assert_eq!(h.consecutive_failures, 0);
    assert_eq!(h.circuit, Circuit::Closed);
    assert_eq!(
        h.availability(T0 + 1_999, &p, &no_budget()),
        Availability::Unavailable {
            until_ms: T0 + 2_000,
            reason: Unhealthy::RateLimited
        }
    );
    assert_eq!(
        h.availability(T0 + 2_000, &p, &no_budget()),
        Availability::Available
    );
    // An earlier reset never shortens a longer cooldown; the cap applies.
    h.rate_limited_until(T0 + 500, T0, &p);
    assert_eq!(h.cooldown_until_ms, T0 + 2_000);
    h.rate_limited_until(u64::MAX, T0, &p);
    assert_eq!(h.cooldown_until_ms, T0 + DEFAULT_MAX_COOLDOWN_MS);
}

#[test]
fn rate_limit_without_reset_is_a_failure() {
    let p = HealthPolicy::default();
    let mut h = TargetHealth::default();
    for i in 0..4 {
        run(&mut h, Outcome::RateLimited { until_ms: None }, T0 + i, &p);
    }
    assert_eq!(h.failures_429, 4);
    assert_eq!(h.circuit, Circuit::Open);
}

#[test]
fn rate_limited_probe_waits_for_the_reset_and_probes_again() {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    let after = h.cooldown_until_ms;
    assert!(h.try_claim_probe(after, &p, &no_budget()));
    h.on_start(after, 0);
    h.on_finish(
        Outcome::RateLimited {
            until_ms: Some(after + 3_000),
        },
        true,
        after + 10,
        &p,
    );
    assert_eq!(h.circuit, Circuit::Open);
    assert_eq!(
        h.availability(after + 2_999, &p, &no_budget()),
        Availability::Unavailable {
            until_ms: after + 3_000,
            reason: Unhealthy::CoolingDown
        }
    );
    assert_eq!(
        h.availability(after + 3_000, &p, &no_budget()),
        Availability::Probe
    );
}

// ---------------------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------------------

#[test]
fn rpm_budget_skips_and_recovers_as_the_window_slides() {
    let p = HealthPolicy::default();
    let budget = Budget {
        rpm: Some(3),
        tpm: None,
    };
    let start = T0; // bucket-aligned
    let mut h = TargetHealth::default();
    for i in 0..3u64 {
        assert_eq!(
            h.admit(start + i * BUDGET_BUCKET_MS, &p, &budget, 0),
            Admission::Admitted { probe: false }
        );
    }
    let now = start + 2 * BUDGET_BUCKET_MS + 1;
    let expected = start + 60_000;
    assert_eq!(
        h.availability(now, &p, &budget),
        Availability::Unavailable {
            until_ms: expected,
            reason: Unhealthy::OverBudget
        }
    );
    assert_eq!(
        h.admit(now, &p, &budget, 0),
        Admission::Refused {
            until_ms: expected,
            reason: Unhealthy::OverBudget
        }
    );
    assert_eq!(
        h.availability(expected - 1, &p, &budget).ready_at(),
        expected
    );
    assert_eq!(
        h.availability(expected, &p, &budget),
        Availability::Available
    );
    // Without a budget the same target is fine.
    assert_eq!(
        h.availability(now, &p, &no_budget()),
        Availability::Available
    );
}

#[test]
fn tpm_budget_counts_estimate_and_usage() {
    let p = HealthPolicy::default();
    let budget = Budget {
        rpm: None,
        tpm: Some(1_000),
    };
    let mut h = TargetHealth::default();
    h.on_start(T0, 400);
    assert_eq!(h.availability(T0, &p, &budget), Availability::Available);
    h.on_finish(
        Outcome::Success {
            latency_ms: 10,
            ttfb_ms: None,
            tokens: 500,
        },
        false,
        T0 + BUDGET_BUCKET_MS,
        &p,
    );
    assert_eq!(
        h.availability(T0 + BUDGET_BUCKET_MS, &p, &budget),
        Availability::Available
    );
    h.on_start(T0 + 2 * BUDGET_BUCKET_MS, 100);
    // 1000 tokens: at the limit. The first 400 leave at T0 + 60 s.
    assert_eq!(
        h.availability(T0 + 2 * BUDGET_BUCKET_MS, &p, &budget),
        Availability::Unavailable {
            until_ms: T0 + 60_000,
            reason: Unhealthy::OverBudget
        }
    );
    assert_eq!(
        h.availability(T0 + 60_000, &p, &budget),
        Availability::Available
    );
    // With both budgets exceeded the later recovery counts.
    let both = Budget {
        rpm: Some(1),
        tpm: Some(1_000),
    };
    assert_eq!(
        h.budget_recovery_ms(T0 + 2 * BUDGET_BUCKET_MS, &both),
        Some(T0 + 2 * BUDGET_BUCKET_MS + 60_000)
    );
}

#[test]
fn cooldown_is_reported_before_budget() {
    let p = HealthPolicy::default();
    let budget = Budget {
        rpm: Some(1),
        tpm: None,
    };
    let mut h = tripped(&p);
    assert!(matches!(
        h.availability(T0 + 10, &p, &budget),
        Availability::Unavailable {
            reason: Unhealthy::CoolingDown,
            ..
        }
    ));
    // Cooled down, but over budget: no probe until the budget allows.
    let after = h.cooldown_until_ms;
    h.on_start(after, 0);
    assert!(matches!(
        h.availability(after, &p, &budget),
        Availability::Unavailable {
            reason: Unhealthy::OverBudget,
            ..
        }
    ));
    assert!(!h.try_claim_probe(after, &p, &budget));
}

#[test]
fn policy_and_budget_validation_name_the_field() {
    assert_eq!(HealthPolicy::default().validate("health"), Ok(()));
    let bad = |p: HealthPolicy| p.validate("health").map_err(|e| e.field);
    assert_eq!(
        bad(HealthPolicy {
            failure_rate_threshold: Some(1.5),
            ..HealthPolicy::default()
        }),
        Err("health.failure_rate_threshold".to_owned())
    );
    assert_eq!(
        bad(HealthPolicy {
            failure_rate_threshold: Some(f64::NAN),
            ..HealthPolicy::default()
        }),
        Err("health.failure_rate_threshold".to_owned())
    );
    assert_eq!(
        bad(HealthPolicy {
            failure_window_ms: 10,
            ..HealthPolicy::default()
        }),
        Err("health.failure_window_ms".to_owned())
    );
    assert_eq!(
        bad(HealthPolicy {
            min_requests: 0,
            ..HealthPolicy::default()
        }),
        Err("health.min_requests".to_owned())
    );
    assert_eq!(
        bad(HealthPolicy {
            probe_timeout_ms: 0,
            ..HealthPolicy::default()
        }),
        Err("health.probe_timeout_ms".to_owned())
    );
    assert_eq!(
        bad(HealthPolicy {
            cooldown_ms: u64::MAX,
            ..HealthPolicy::default()
        }),
        Err("health.cooldown_ms".to_owned())
    );
    assert_eq!(Budget::default().validate("b"), Ok(()));
    assert_eq!(
        Budget {
            rpm: Some(0),
            tpm: None
        }
        .validate("")
        .map_err(|e| e.field),
        Err("rpm".to_owned())
    );
    assert_eq!(
        Budget {
            rpm: None,
            tpm: Some(0)
        }
        .validate("t")
        .map_err(|e| e.field),
        Err("t.tpm".to_owned())
    );
}

// ---------------------------------------------------------------------------------------
// Recovers soonest
// ---------------------------------------------------------------------------------------

fn down(until_ms: u64) -> Availability {
    Availability::Unavailable {
        until_ms,
        reason: Unhealthy::CoolingDown,
    }
}

#[test]
fn soonest_prefers_available_then_probe_then_earliest_recovery() {
    assert_eq!(soonest(Vec::<(usize, Availability)>::new()), None);
    let all_down = [
        ("a", down(T0 + 30)),
        ("b", down(T0 + 10)),
        ("c", down(T0 + 20)),
    ];
    assert_eq!(soonest(all_down).map(|(n, _)| n), Some("b"));
    let ties = [("a", down(T0 + 10)), ("b", down(T0 + 10))];
    assert_eq!(soonest(ties).map(|(n, _)| n), Some("a"), "ties keep order");
    let probe = [("a", down(T0)), ("b", Availability::Probe)];
    assert_eq!(soonest(probe).map(|(n, _)| n), Some("b"));
    let mixed = [
        ("a", Availability::Probe),
        ("b", down(1)),
        ("c", Availability::Available),
    ];
    assert_eq!(soonest(mixed).map(|(n, _)| n), Some("c"));
}

#[test]
fn soonest_over_real_states() {
    let p = HealthPolicy::default();
    let budget = Budget {
        rpm: Some(1),
        tpm: None,
    };
    let mut limited = TargetHealth::default();
    limited.rate_limited_until(T0 + 5_000, T0, &p);
    let broken = tripped(&p); // until T0 + 3 + 30 s
    let mut busy = TargetHealth::default();
    busy.on_start(T0, 0); // out of budget until T0 + 60 s
    let states = [("limited", limited), ("broken", broken), ("busy", busy)];
    let pick = soonest(
        states
            .iter()
            .map(|(n, s)| (*n, s.availability(T0 + 100, &p, &budget))),
    );
    assert_eq!(
        pick,
        Some((
            "limited",
            Availability::Unavailable {
                until_ms: T0 + 5_000,
                reason: Unhealthy::RateLimited
            }
        ))
    );
}

// ---------------------------------------------------------------------------------------
// Retry and rate-limit headers
// ---------------------------------------------------------------------------------------

const MAX: u64 = DEFAULT_MAX_COOLDOWN_MS;

#[test]
fn retry_after_seconds_is_honoured_to_the_second() {
    let now = T0 + 123;
    let h = [("retry-after", "2")];
    assert_eq!(
        cooldown_until(429, &lookup(&h), now, MAX),
        Some(now + 2_000)
    );
    assert_eq!(
        cooldown_until(503, &lookup(&h), now, MAX),
        Some(now + 2_000)
    );
    // Not a reason to wait on other statuses.
    assert_eq!(cooldown_until(200, &lookup(&h), now, MAX), None);
    assert_eq!(cooldown_until(500, &lookup(&h), now, MAX), None);
    assert_eq!(parse_retry_after(" 120 ", now), Some(now + 120_000));
    assert_eq!(parse_retry_after("1.5", now), Some(now + 1_500));
    // Zero means "now": nothing to wait for.
    assert_eq!(
        cooldown_until(429, &lookup(&[("retry-after", "0")]), now, MAX),
        None
    );
}

#[test]
fn retry_after_http_date_is_honoured_to_the_second() {
    let now = T0 + 250;
    let h = [("Retry-After", "Wed, 01 Jan 2025 00:00:02 GMT")];
    assert_eq!(cooldown_until(429, &lookup(&h), now, MAX), Some(T0 + 2_000));
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777_000)
    );
    assert_eq!(
        parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
        Some(784_111_777_000)
    );
    assert_eq!(
        parse_http_date("Sun Nov  6 08:49:37 1994"),
        Some(784_111_777_000)
    );
    assert_eq!(
        parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"),
        Some(1_709_251_199_000)
    );
    // A date in the past: no cooldown.
    let past = [("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")];
    assert_eq!(cooldown_until(429, &lookup(&past), now, MAX), None);
}

#[test]
fn retry_after_ms_wins() {
    let h = [("retry-after", "20"), ("retry-after-ms", "1500")];
    assert_eq!(cooldown_until(429, &lookup(&h), T0, MAX), Some(T0 + 1_500));
    let bad_ms = [("retry-after", "20"), ("retry-after-ms", "soon")];
    assert_eq!(
        cooldown_until(429, &lookup(&bad_ms), T0, MAX),
        Some(T0 + 20_000)
    );
}

#[test]
fn retry_after_garbage_is_rejected() {
    for v in [
        "",
        "soon",
        "-1",
        "1e3",
        "2 s",
        "1,2",
        ".",
        "0x10",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Mon, 30 Feb 2024 00:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
    ] {
        assert_eq!(parse_retry_after(v, T0), None, "{v:?}");
        assert_eq!(
            cooldown_until(429, &lookup(&[("retry-after", v)]), T0, MAX),
            None,
            "{v:?}"
        );
    }
}

#[test]
fn absurd_waits_are_capped() {
    let h = [("retry-after", "999999999")];
    assert_eq!(cooldown_until(429, &lookup(&h), T0, MAX), Some(T0 + MAX));
    let huge = [(
        "retry-after",
        "99999999999999999999999999999999999999999999",
    )];
    assert_eq!(cooldown_until(429, &lookup(&huge), T0, MAX), Some(T0 + MAX));
    let far = [("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")];
    assert_eq!(cooldown_until(429, &lookup(&far), T0, MAX), Some(T0 + MAX));
    assert_eq!(
        cooldown_until(429, &lookup(&h), T0, 5_000),
        Some(T0 + 5_000)
    );
    // Near the end of time nothing overflows.
    assert_eq!(
        cooldown_until(429, &lookup(&h), u64::MAX - 1, MAX),
        Some(u64::MAX)
    );
}

#[test]
fn openai_durations() {
    assert_eq!(parse_go_duration("1s"), Some(1_000));
    assert_eq!(parse_go_duration("6m0s"), Some(360_000));
    assert_eq!(parse_go_duration("20ms"), Some(20));
    assert_eq!(parse_go_duration("1h2m3.5s"), Some(3_723_500));
    assert_eq!(parse_go_duration("59.123s"), Some(59_123));
    assert_eq!(parse_go_duration("2m59.56s"), Some(179_560));
    assert_eq!(parse_go_duration("0"), Some(0));
    assert_eq!(parse_go_duration("0s"), Some(0));
    assert_eq!(parse_go_duration("1.5ms"), Some(2), "rounds up to whole ms");
    assert_eq!(parse_go_duration("100us"), Some(1));
    assert_eq!(parse_go_duration("250µs"), Some(1));
    assert_eq!(parse_go_duration("1000000ns"), Some(1));
    assert_eq!(parse_go_duration(".5s"), Some(500));
    assert_eq!(parse_go_duration("1h"), Some(3_600_000));
    assert_eq!(
        parse_go_duration("99999999999999999999999h"),
        Some(u64::MAX)
    );
    for bad in [
        "", "s", "1", "1x", "-1s", "+1s", "1s ", " 1s", "1..2s", "abc", "1h-2m", "1 s", "ms", "1S",
        "1sec", "1m1", ".s", "NaN",
    ] {
        assert_eq!(parse_go_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn openai_exhausted_limits_cool_down_until_reset() {
    let h = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-remaining-tokens", "1200"),
        ("x-ratelimit-reset-tokens", "1h"),
    ];
    // Even on a successful response: the next request would be refused.
    assert_eq!(
        cooldown_until(200, &lookup(&h), T0, MAX),
        Some(T0 + 360_000)
    );
    let tokens = [
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "20ms"),
    ];
    assert_eq!(
        cooldown_until(200, &lookup(&tokens), T0, MAX),
        Some(T0 + 20)
    );
    // Both exhausted: the later reset.
    let both = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "2m3.5s"),
    ];
    assert_eq!(
        cooldown_until(200, &lookup(&both), T0, MAX),
        Some(T0 + 123_500)
    );
    // A 429 with Retry-After and an exhausted limit: the later of the two.
    let mixed = [
        ("retry-after", "2"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1s"),
    ];
    assert_eq!(
        cooldown_until(429, &lookup(&mixed), T0, MAX),
        Some(T0 + 2_000)
    );
    // Remaining not zero, no reset, or garbage: nothing.
    let left = [
        ("x-ratelimit-remaining-requests", "3"),
        ("x-ratelimit-reset-requests", "1s"),
    ];
    assert_eq!(cooldown_until(429, &lookup(&left), T0, MAX), None);
    let no_reset = [("x-ratelimit-remaining-requests", "0")];
    assert_eq!(cooldown_until(429, &lookup(&no_reset), T0, MAX), None);
    let garbage = [
        ("x-ratelimit-remaining-requests", "zero"),
        ("x-ratelimit-reset-requests", "1s"),
    ];
    assert_eq!(cooldown_until(429, &lookup(&garbage), T0, MAX), None);
    let bad_reset = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "later"),
    ];
    assert_eq!(cooldown_until(429, &lookup(&bad_reset), T0, MAX), None);
    assert_eq!(cooldown_until(429, &lookup(&[]), T0, MAX), None);
}

#[test]
fn anthropic_exhausted_limits_cool_down_until_the_rfc3339_reset() {
    let h = [
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:30Z"),
        ("anthropic-ratelimit-tokens-remaining", "5000"),
        ("anthropic-ratelimit-tokens-reset", "2025-01-01T00:05:00Z"),
    ];
    assert_eq!(cooldown_until(200, &lookup(&h), T0, MAX), Some(T0 + 30_000));
    let input = [
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-01-01T01:00:07+01:00",
        ),
    ];
    assert_eq!(
        cooldown_until(429, &lookup(&input), T0, MAX),
        Some(T0 + 7_000)
    );
    let output = [
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-01-01T00:00:01.5Z",
        ),
    ];
    assert_eq!(
        cooldown_until(200, &lookup(&output), T0, MAX),
        Some(T0 + 1_500)
    );
}

#[test]
fn rfc3339_timestamps() {
    assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(T0));
    assert_eq!(parse_rfc3339("2025-01-01t00:00:00z"), Some(T0));
    assert_eq!(parse_rfc3339("2025-01-01 00:00:00Z"), Some(T0));
    assert_eq!(
        parse_rfc3339("1996-12-19T16:39:57-08:00"),
        Some(851_042_397_000)
    );
    assert_eq!(parse_rfc3339("2025-01-01T00:00:00.123Z"), Some(T0 + 123));
    assert_eq!(parse_rfc3339("2025-01-01T00:00:00.1234Z"), Some(T0 + 124));
    assert_eq!(
        parse_rfc3339("2025-01-01T00:00:00.000000001Z"),
        Some(T0 + 1)
    );
    assert_eq!(
        parse_rfc3339("2024-02-29T23:59:59Z"),
        Some(1_709_251_199_000)
    );
    for bad in [
        "",
        "2025-01-01",
        "2025-01-01T00:00:00",
        "2025-01-01T00:00:00+0100",
        "2025-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2025-01-01T25:00:00Z",
        "2025/01/01T00:00:00Z",
        "2025-01-01T00:00:00.Z",
        "2025-01-01T00:00:00Z ",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",
        "2025-01-01T00:00:00+24:00",
        "２025-01-01T00:00:00Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
    }
}

/// Where the crates (`httpdate`, `time`) read dates differently from the hand parser they
/// replaced: stricter for HTTP dates (RFC 9110's fixed layout, the weekday must be the date's),
/// as lenient as RFC 3339 allows for the separator. A refused Retry-After only means the 429
/// cools the target down by the policy's own backoff instead.
#[test]
fn date_edges_of_the_crates() {
    for refused in [
        // The weekday does not match the date (6 Nov 1994 was a Sunday).
        "Mon, 06 Nov 1994 08:49:37 GMT",
        // Blanks other than the fixed single spaces.
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994\t08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        // A leap second.
        "Sat, 31 Dec 2016 23:59:60 GMT",
    ] {
        assert_eq!(parse_http_date(refused), None, "{refused:?}");
    }
    assert_eq!(
        parse_http_date("Sun Nov 06 08:49:37 1994"),
        Some(784_111_777_000)
    );
    // RFC 3339 §5.6 lets applications pick another separator than `T`.
    assert_eq!(parse_rfc3339("2025-01-01_00:00:00Z"), Some(T0));
    // A leap second only where one can be: the last second of a month, UTC.
    assert_eq!(
        parse_rfc3339("2016-12-31T23:59:60Z"),
        Some(1_483_228_800_000)
    );
    assert_eq!(parse_rfc3339("2025-01-01T12:00:60Z"), None);
    // Nanoseconds are the finest unit read.
    assert_eq!(parse_rfc3339("2025-01-01T00:00:00.0000000009Z"), Some(T0));
}

#[test]
fn reset_values_are_read_leniently() {
    assert_eq!(parse_reset("1s", T0), Some(T0 + 1_000));
    assert_eq!(parse_reset(" 2025-01-01T00:00:09Z ", T0), Some(T0 + 9_000));
    assert_eq!(parse_reset("7", T0), Some(T0 + 7_000));
    assert_eq!(parse_reset("0.25", T0), Some(T0 + 250));
    // A Unix timestamp in seconds.
    assert_eq!(parse_reset("1735689612", T0), Some(T0 + 12_000));
    for bad in ["", "-5", "soon", "1 s", "1.2.3"] {
        assert_eq!(parse_reset(bad, T0), None, "{bad:?}");
    }
}

#[test]
fn rate_limit_outcome_flows_into_state() {
    let p = HealthPolicy::default();
    let h = [("retry-after", "2")];
    let until = cooldown_until(429, &lookup(&h), T0, p.max_rate_limit_cooldown_ms);
    let mut s = TargetHealth::default();
    s.on_start(T0, 0);
    s.on_finish(Outcome::RateLimited { until_ms: until }, false, T0, &p);
    assert_eq!(
        s.availability(T0 + 1_999, &p, &no_budget()).ready_at(),
        T0 + 2_000
    );
    assert!(s.availability(T0 + 2_000, &p, &no_budget()).is_usable());
}

// ---------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------

fn busy_state() -> TargetHealth {
    let p = HealthPolicy::default();
    let mut h = tripped(&p);
    run(&mut h, ok(120), T0 + 50_000, &p);
    h.on_start(T0 + 51_000, 777);
    h.on_start(T0 + 52_000, 3);
    assert!(h.try_claim_probe(h.cooldown_until_ms, &p, &no_budget()));
    h.rate_limited_until(T0 + 90_000, T0, &p);
    h.cancelled = 9;
    h.failures_429 = u64::MAX;
    h.recent.record(T0 + 52_000, p.failure_bucket_ms(), 3, 2, 1);
    h
}

#[test]
fn codec_round_trips() {
    assert_eq!(ENCODED_LEN, 268);
    for h in [TargetHealth::default(), busy_state()] {
        let bytes = encode(&h);
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(bytes.first(), Some(&VERSION));
        assert_eq!(decode(&bytes), Some(h));
    }
    let h = busy_state();
    assert_eq!(h.circuit, Circuit::HalfOpen);
    assert!(h.latency.get().is_some());
    assert!(h.ttfb.get().is_some());
}

#[test]
fn codec_rejects_bad_input() {
    let good = encode(&busy_state());
    assert_eq!(decode(&[]), None);
    assert_eq!(decode(&good[..ENCODED_LEN - 1]), None);
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(decode(&longer), None);
    assert_eq!(decode(&0u64.to_le_bytes()), None);
    let mut version = good.clone();
    version[0] = VERSION + 1;
    assert_eq!(decode(&version), None);
    let mut circuit = good.clone();
    circuit[1] = 3;
    assert_eq!(decode(&circuit), None);
    let mut flags = good.clone();
    flags[2] = 0x80;
    assert_eq!(decode(&flags), None);
    let mut reserved = good.clone();
    reserved[3] = 1;
    assert_eq!(decode(&reserved), None);
    assert_eq!(decode(&vec![0xff; ENCODED_LEN]), None);
    // Any bytes at all: never panics.
    let mut noise = vec![VERSION, 0, 3, 0];
    noise.extend((0..ENCODED_LEN - 4).map(|i| (i * 31 % 251) as u8));
    assert!(decode(&noise).is_some());
}

// ---------------------------------------------------------------------------------------
// Board
// ---------------------------------------------------------------------------------------

#[test]
fn keys_are_bounded_and_unambiguous() {
    assert_eq!(
        HealthBoard::key("openai", "gpt-4o-mini"),
        "llm_router.h.openai/gpt-4o-mini"
    );
    assert_eq!(
        HealthBoard::key("groq", "meta-llama/llama-4"),
        "llm_router.h.groq/meta-llama/llama-4"
    );
    assert_ne!(HealthBoard::key("a/b", "c"), HealthBoard::key("a", "b/c"));
    assert_eq!(HealthBoard::key("a/b", "c"), "llm_router.h.a%2Fb/c");
    assert_ne!(HealthBoard::key("a%2Fb", "c"), HealthBoard::key("a/b", "c"));
    assert_eq!(
        HealthBoard::passthrough_key("openai"),
        "llm_router.h.openai"
    );
    assert_ne!(
        HealthBoard::passthrough_key("openai"),
        HealthBoard::key("openai", "")
    );
    assert!(HealthBoard::key("x", "y").starts_with(KEY_PREFIX));
}

fn started(h: &mut TargetHealth) {
    h.on_start(T0, 1);
}

#[test]
fn board_reads_fresh_state_for_missing_or_foreign_values() {
    let board = HealthBoard::default();
    let mut host = MockHost::default();
    assert_eq!(board.read(&host, "k"), Ok(TargetHealth::default()));
    host.shared.insert("k".to_owned(), (b"garbage".to_vec(), 4));
    assert_eq!(board.read(&host, "k"), Ok(TargetHealth::default()));
    // An update over a foreign value replaces it with a valid record.
    let (state, ()) = board.update(&mut host, "k", started).expect("update");
    assert_eq!(state.requests, 1);
    assert_eq!(board.read(&host, "k"), Ok(state));
}

#[test]
fn board_updates_accumulate() {
    let board = HealthBoard::default();
    let mut host = MockHost::default();
    let key = HealthBoard::key("openai", "gpt-4o");
    for _ in 0..5 {
        board.update(&mut host, &key, started).expect("update");
    }
    let p = HealthPolicy::default();
    let (state, ()) = board
        .update(&mut host, &key, |h| h.on_finish(ok(40), false, T0, &p))
        .expect("update");
    assert_eq!(state.requests, 5);
    assert_eq!(state.in_flight, 4);
    assert_eq!(state.successes, 1);
    assert_eq!(
        host.shared.get(&key).map(|(v, _)| v.len()),
        Some(ENCODED_LEN)
    );
    assert_eq!(board.read(&host, &key), Ok(state));
}

#[test]
fn board_survives_mock_cas_conflicts_and_gives_up_after_a_bound() {
    let board = HealthBoard::default();
    let mut host = MockHost::default();
    board.update(&mut host, "k", started).expect("create");
    host.cas_conflicts = 3;
    let (state, ()) = board.update(&mut host, "k", started).expect("retried");
    assert_eq!(host.cas_conflicts, 0);
    assert_eq!(board.read(&host, "k"), Ok(state));
    // A host that always loses: a bounded number of tries, then an error.
    host.cas_conflicts = usize::MAX;
    let mut runs = 0;
    let err = board.update(&mut host, "k", |h| {
        runs += 1;
        started(h)
    });
    assert_eq!(
        err,
        Err(BoardError::Contended {
            attempts: CAS_RETRIES
        })
    );
    assert_eq!(runs, CAS_RETRIES);
    assert_eq!(host.cas_conflicts, usize::MAX - CAS_RETRIES);
    let mut small = HealthBoard::default();
    small.max_attempts = 2;
    assert_eq!(
        small.update(&mut host, "k", started),
        Err(BoardError::Contended { attempts: 2 })
    );
    assert!(err.unwrap_err().to_string().contains("16 times"));
}

/// Shared data as proxy-wasm-cpp-host keeps it (a missing key is inserted whatever the token;
/// an existing one checks a non-zero token), with other workers that write between our read
/// and our write.
#[derive(Default)]
struct EnvoyHost {
    shared: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// Before each of this many of our writes, another worker starts a request.
    races: usize,
    writes: usize,
    tokens_seen: Vec<Option<u32>>,
    fail: Option<HostError>,
}

impl EnvoyHost {
    fn raw_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let cas = cas.unwrap_or(0);
        if let Some((_, current)) = self.shared.get(key) {
            if cas != 0 && cas != *current {
                return Err(HostError::CasMismatch);
            }
        }
        self.next_cas += 1;
        self.shared
            .insert(key.to_owned(), (value.to_vec(), self.next_cas));
        Ok(())
    }

    fn requests(&self, key: &str) -> u64 {
        self.shared
            .get(key)
            .and_then(|(v, _)| decode(v))
            .map_or(0, |h| h.requests)
    }
}

impl Host for EnvoyHost {
    fn request_header(&self, _: &str) -> HostResult<Option<String>> {
        Ok(None)
    }
    fn set_request_header(&mut self, _: &str, _: Option<&str>) -> HostResult<()> {
        Ok(())
    }
    fn request_body(&self, _: usize) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    fn replace_request_body(&mut self, _: usize, _: &[u8]) -> HostResult<()> {
        Ok(())
    }
    fn set_response_header(&mut self, _: &str, _: Option<&str>) -> HostResult<()> {
        Ok(())
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        Ok(match self.shared.get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        })
    }
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.writes += 1;
        self.tokens_seen.push(cas);
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        if self.races > 0 {
            self.races -= 1;
            // Another worker does a complete, correct update first.
            let (theirs, their_cas) = self.shared_data(key)?;
            let mut h = theirs.as_deref().and_then(decode).unwrap_or_default();
            h.on_start(T0, 0);
            self.raw_set(key, &encode(&h), their_cas)?;
        }
        self.raw_set(key, value, cas)
    }
    fn send_local_reply(&mut self, _: u32, _: &[(&str, &str)], _: &[u8]) -> HostResult<()> {
        Ok(())
    }
    fn now_nanos(&self) -> u64 {
        T0 * 1_000_000
    }
}

#[test]
fn board_loses_no_update_to_concurrent_writers() {
    let board = HealthBoard::default();
    let mut host = EnvoyHost::default();
    board.update(&mut host, "k", started).expect("create");
    assert_eq!(host.tokens_seen, vec![Some(CREATE_CAS)]);
    host.races = 5;
    for _ in 0..3 {
        board.update(&mut host, "k", started).expect("update");
    }
    // 1 + 3 of ours, 5 of theirs.
    assert_eq!(host.requests("k"), 9);
    assert_eq!(host.races, 0);
}

#[test]
fn board_creation_race_loses_no_update() {
    let board = HealthBoard::default();
    let mut host = EnvoyHost {
        races: 1,
        ..EnvoyHost::default()
    };
    // The other worker creates the key between our read (missing) and our first write.
    let (state, ()) = board.update(&mut host, "new", started).expect("update");
    assert_eq!(state.requests, 2);
    assert_eq!(host.requests("new"), 2);
    assert_eq!(host.tokens_seen.first(), Some(&Some(CREATE_CAS)));
    assert_eq!(host.writes, 2);
}

#[test]
fn board_first_write_on_mock_host_falls_back_to_unconditional() {
    // MockHost refuses any token for a missing key; the board notices and creates it plainly.
    let board = HealthBoard::default();
    let mut host = MockHost::default();
    let (state, ()) = board.update(&mut host, "k", started).expect("create");
    assert_eq!(state.requests, 1);
    assert_eq!(board.read(&host, "k"), Ok(state));
}

#[test]
fn board_reports_host_errors() {
    let board = HealthBoard::default();
    let mut host = EnvoyHost {
        fail: Some(HostError::Status(
            "set_shared_data: InternalFailure".to_owned(),
        )),
        ..EnvoyHost::default()
    };
    let err = board.update(&mut host, "k", started);
    assert!(matches!(err, Err(BoardError::Host(HostError::Status(_)))));
    assert_eq!(host.writes, 1, "no retry on other errors");
    assert!(err.unwrap_err().to_string().contains("InternalFailure"));
}

#[test]
fn ensure_creates_a_health_record_once_and_keeps_existing() {
    let board = HealthBoard::default();
    let mut host = EnvoyHost::default();
    let ensure = |host: &mut EnvoyHost| {
        crate::host::shared::ensure::<TargetHealth>(host, "k", board.max_attempts)
    };
    ensure(&mut host).expect("ensure");
    assert_eq!(
        host.shared.get("k").map(|(v, _)| v.len()),
        Some(ENCODED_LEN)
    );
    board.update(&mut host, "k", started).expect("update");
    ensure(&mut host).expect("ensure again");
    assert_eq!(host.requests("k"), 1);
    assert_eq!(host.writes, 2);
}

#[test]
fn board_probe_claim_has_a_single_winner_across_workers() {
    let p = HealthPolicy::default();
    let board = HealthBoard::default();
    let mut host = EnvoyHost::default();
    let key = HealthBoard::key("openai", "gpt-4o");
    board
        .update(&mut host, &key, |h| *h = tripped(&p))
        .expect("seed");
    let after = board.read(&host, &key).expect("read").cooldown_until_ms;
    // Two workers try at the same moment: the second sees the first's claim.
    let wins: Vec<bool> = (0..2)
        .map(|_| {
            board
                .update(&mut host, &key, |h| {
                    h.try_claim_probe(after, &p, &no_budget())
                })
                .expect("claim")
                .1
        })
        .collect();
    assert_eq!(wins, vec![true, false]);
    // The claim made inside a lost race is redone on the fresh state.
    let mut raced = EnvoyHost::default();
    board
        .update(&mut raced, &key, |h| *h = tripped(&p))
        .expect("seed");
    raced.races = 1;
    let (state, admission) = board
        .update(&mut raced, &key, |h| h.admit(after, &p, &no_budget(), 0))
        .expect("admit");
    assert_eq!(admission, Admission::Admitted { probe: true });
    assert_eq!(state.in_flight, 2, "the racer's request and ours");
    // Racer's start plus ours, on top of the 4 failures that tripped it.
    assert_eq!(state.requests, 6);
}
