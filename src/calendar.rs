//! UTC calendar arithmetic on Unix milliseconds (the `time` crate, no time-zone database):
//! dates for the access log, calendar months for monthly client budgets. `time` counts years
//! up to 9999; a later clock reads as the last second of 9999.

use time::{Date, Month, Time, UtcDateTime};

/// The UTC date and time of `unix_ms`, to the second.
pub fn utc(unix_ms: u64) -> UtcDateTime {
    i64::try_from(unix_ms / 1000)
        .ok()
        .and_then(|secs| UtcDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(UtcDateTime::MAX)
}

/// The calendar month (UTC) of `unix_ms`, counted from January 1970 = 0.
pub fn month_index(unix_ms: u64) -> u32 {
    let t = utc(unix_ms);
    // From 1970 on: the year difference is not negative.
    let years = u32::try_from(t.year() - 1970).unwrap_or(0);
    years * 12 + u32::from(u8::from(t.month()) - 1)
}

/// Where month `index` ([`month_index`]) begins, in Unix milliseconds; `u64::MAX` (never)
/// for a month after 9999.
pub fn month_start_ms(index: u32) -> u64 {
    let first = i32::try_from(index / 12)
        .ok()
        .and_then(|years| years.checked_add(1970))
        .zip(u8::try_from(index % 12 + 1).ok())
        .and_then(|(year, month)| {
            let month = Month::try_from(month).ok()?;
            Date::from_calendar_date(year, month, 1).ok()
        });
    first
        .and_then(|d| u64::try_from(UtcDateTime::new(d, Time::MIDNIGHT).unix_timestamp()).ok())
        .map_or(u64::MAX, |secs| secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;

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

    #[test]
    fn every_month_index_round_trips_to_its_start() {
        let dec_9999 = (9999 - 1970) * 12 + 11;
        for index in 1..=dec_9999 {
            let start = month_start_ms(index);
            assert_eq!(month_index(start), index);
            assert_eq!(month_index(start - 1), index - 1);
        }
    }

    #[test]
    fn clocks_past_9999_saturate() {
        let dec_9999 = (9999 - 1970) * 12 + 11;
        // 10000-01-01T00:00:00Z and the end of u64 both read as December 9999.
        assert_eq!(month_index(253_402_300_800_000), dec_9999);
        assert_eq!(month_index(u64::MAX), dec_9999);
        assert_eq!(utc(u64::MAX), UtcDateTime::MAX);
        assert_eq!(month_start_ms(dec_9999), 253_399_622_400_000);
        assert_eq!(month_start_ms(dec_9999 + 1), u64::MAX);
        assert_eq!(month_start_ms(u32::MAX), u64::MAX);
    }
}
