//! The `health` section: thresholds and durations checked, seconds turned into milliseconds.

use super::HealthPlan;
use crate::config::error::ConfigError;
use crate::config::raw::RawHealth;
use crate::health::HealthPolicy;

const DAY_SECONDS: f64 = 86_400.0;

/// Seconds (finite, within `min ..= max`) to whole milliseconds; `min_exclusive` refuses `min`.
fn seconds_ms(
    value: f64,
    field: &str,
    min: f64,
    min_exclusive: bool,
    max: f64,
) -> Result<u64, ConfigError> {
    let low_ok = if min_exclusive {
        value > min
    } else {
        value >= min
    };
    if !(value.is_finite() && low_ok && value <= max) {
        let low = if min_exclusive {
            format!("greater than {min}")
        } else {
            format!("at least {min}")
        };
        return Err(ConfigError::new(
            field,
            format!("must be a number of seconds {low} and at most {max}"),
        ));
    }
    // In range 0 ..= 86400000 after the check, so the cast is exact.
    Ok((value * 1000.0).round() as u64)
}

pub(super) fn compile_health(raw: &RawHealth) -> Result<HealthPlan, ConfigError> {
    let mut policy = HealthPolicy::default();
    if let Some(n) = raw.allowed_fails {
        if n > 1_000_000 {
            return Err(ConfigError::new(
                "health.allowed_fails",
                "must be at most 1000000",
            ));
        }
        policy.allowed_fails = n;
    }
    if let Some(s) = raw.cooldown_seconds {
        policy.cooldown_ms = seconds_ms(s, "health.cooldown_seconds", 0.0, false, DAY_SECONDS)?;
    }
    match raw.failure_rate {
        None => {}
        Some(None) => policy.failure_rate_threshold = None,
        Some(Some(fr)) => {
            if !(fr.threshold.is_finite() && fr.threshold > 0.0 && fr.threshold <= 1.0) {
                return Err(ConfigError::new(
                    "health.failure_rate.threshold",
                    "must be a fraction greater than 0 and at most 1",
                ));
            }
            policy.failure_rate_threshold = Some(fr.threshold);
            if let Some(w) = fr.window_seconds {
                policy.failure_window_ms =
                    seconds_ms(w, "health.failure_rate.window_seconds", 1.0, false, 3600.0)?;
            }
            if let Some(n) = fr.min_requests {
                if n == 0 {
                    return Err(ConfigError::new(
                        "health.failure_rate.min_requests",
                        "must be at least 1",
                    ));
                }
                policy.min_requests = n;
            }
        }
    }
    if let Some(s) = raw.probe_timeout_seconds {
        policy.probe_timeout_ms =
            seconds_ms(s, "health.probe_timeout_seconds", 0.0, true, DAY_SECONDS)?.max(1);
    }
    if let Some(s) = raw.max_retry_after_seconds {
        policy.max_rate_limit_cooldown_ms =
            seconds_ms(s, "health.max_retry_after_seconds", 0.0, true, DAY_SECONDS)?.max(1);
    }
    // The policy's own range checks, as a backstop (their names are internal ones).
    policy.validate("health")?;
    Ok(HealthPlan {
        enabled: raw.enabled.unwrap_or(true),
        policy,
        when_all_unhealthy: raw.when_all_unhealthy,
    })
}
