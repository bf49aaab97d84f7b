//! UTC calendar arithmetic on Unix milliseconds (no time-zone database, no dependency): dates
//! for the access log, calendar months for monthly client budgets.

const DAY_MS: u64 = 86_400_000;

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for non-negative days).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date from 1970 on (Hinnant's `days_from_civil`).
pub fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The calendar month (UTC) of `unix_ms`, counted from January 1970 = 0.
pub fn month_index(unix_ms: u64) -> u32 {
    let (y, m, _) = civil_from_days(unix_ms / DAY_MS);
    u32::try_from((y.saturating_sub(1970)) * 12 + (m - 1)).unwrap_or(u32::MAX)
}

/// Where month `index` ([`month_index`]) begins, in Unix milliseconds.
pub fn month_start_ms(index: u32) -> u64 {
    let index = u64::from(index);
    days_from_civil(1970 + index / 12, index % 12 + 1, 1).saturating_mul(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dates_round_trip() {
        for days in (0..200_000u64)
            .step_by(7)
            .chain([59, 60, 365, 10_956, 47_540])
        {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
    }

    #[test]
    fn months_start_at_midnight_utc_on_the_first() {
        assert_eq!(month_index(0), 0);
        assert_eq!(month_start_ms(0), 0);
        // 2026-11-23T15:32:21Z is in November 2026: (2026 - 1970) * 12 + 10.
        let now = 1_795_447_941_806;
        assert_eq!(month_index(now), 682);
        // 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z (date -u -d ... +%s).
        assert_eq!(month_start_ms(682), 1_793_491_200_000);
        assert_eq!(month_start_ms(683), 1_796_083_200_000);
        assert_eq!(month_index(1_796_083_200_000 - 1), 682);
        assert_eq!(month_index(1_796_083_200_000), 683);
        // February of a leap year, and December to January.
        let feb_2028 = (2028 - 1970) * 12 + 1;
        assert_eq!(
            month_start_ms(feb_2028 + 1) - month_start_ms(feb_2028),
            29 * DAY_MS
        );
        let dec_2026 = 683;
        assert_eq!(month_index(month_start_ms(dec_2026 + 1)), dec_2026 + 1);
    }
}
