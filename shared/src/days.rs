//! Calendar days as the cloud's analytics API takes and shows them and the box's doctor
//! tells them: days since 1970-01-01 and `YYYY-MM-DD` (proleptic Gregorian), and instants
//! as RFC 3339 text (UTC), without a date-time crate for a few conversions.

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is one (years 2000 to 2199).
pub fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (2000..2200).contains(&y)
        && (1..=12).contains(&m)
        && (1..=month_days[(m - 1) as usize]).contains(&d);
    valid.then(|| days_from_civil(y, m, d))
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn format_day(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// An instant (Unix milliseconds) as RFC 3339 text in UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_instant(unix_ms: i64) -> String {
    const DAY_MS: i64 = 86_400_000;
    let in_day = unix_ms.rem_euclid(DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        format_day(unix_ms.div_euclid(DAY_MS)),
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Days since 1970-01-01 of a date (Howard Hinnant's days_from_civil; any year).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_and_format_round_trip() {
        assert_eq!(parse_day("2026-12-02"), Some(20_789));
        assert_eq!(format_day(20_789), "2026-12-02");
        assert_eq!(
            parse_day("2028-02-29").map(format_day).as_deref(),
            Some("2028-02-29")
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-32",
            "+026-01-01",
            "1999-12-31",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        for day in (parse_day("2000-01-01").unwrap()..parse_day("2199-12-31").unwrap()).step_by(97)
        {
            assert_eq!(parse_day(&format_day(day)), Some(day));
        }
    }

    #[test]
    fn instants_are_rfc3339_in_utc() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
        // 2026-12-03 09:05:07.042 UTC
        assert_eq!(
            format_instant(1_796_288_707_042),
            "2026-12-03T09:05:07.042Z"
        );
        assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999Z");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_day_or_refused_without_panicking(text in "\\PC{0,12}") {
            if let Some(day) = parse_day(&text) {
                proptest::prop_assert_eq!(format_day(day), text);
            }
        }

        #[test]
        fn near_misses_of_a_day_are_refused_without_panicking(
            text in "[0-9+\\-é]{4}-[0-9é]{1,3}-[0-9 ]{1,3}"
        ) {
            if let Some(day) = parse_day(&text) {
                proptest::prop_assert_eq!(format_day(day), text);
            }
        }
    }
}
