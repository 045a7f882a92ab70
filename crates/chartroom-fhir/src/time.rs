//! FHIR `date` / `dateTime` / `instant` text to and from the domain's [`Timestamp`] and [`Date`].

use chartroom_domain::clock::days_from_civil;
use chartroom_domain::{Date, Timestamp};

/// An instant as FHIR `instant` (valid as `dateTime` too), in UTC with milliseconds so that the
/// domain's millisecond timestamps round-trip: `2026-11-27T07:23:03.250Z`.
pub fn format_instant(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = t.to_civil();
    let ms = t.0.rem_euclid(1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Parses a FHIR `dateTime` that has a time and a zone (`2019-02-18T10:02:47-05:00`,
/// `2019-02-18T15:02:47.391Z`). A bare date is refused: a vital sign or a note needs its time.
/// Digits beyond milliseconds are dropped.
pub fn parse_date_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date: Date = s[..10].parse().ok()?;
    let (h, mi, sec) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        // Pad or cut the fraction to three digits: ".5" is 500 ms, ".123456" is 123 ms.
        let mut three = frac[..n.min(3)].to_string();
        while three.len() < 3 {
            three.push('0');
        }
        ms = digits(&three)?;
        rest = &frac[n..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if oh > 14 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(date.year), u32::from(date.month), u32::from(date.day));
    let local_ms = days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms;
    Some(Timestamp(local_ms - offset_minutes * 60_000))
}

/// The calendar date of a FHIR `date` or `dateTime` as written (its local date), if it is at least
/// a full date. A partial date (`2001`, `2001-05`) has no domain equivalent and gives `None`.
pub fn date_part(s: &str) -> Option<Date> {
    s.get(..10)?.parse().ok()
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_synthea_and_chartroom_forms() {
        let utc = parse_date_time("2019-02-18T15:02:47Z").unwrap();
        assert_eq!(utc.to_string(), "2019-02-18T15:02:47Z");
        assert_eq!(parse_date_time("2019-02-18T10:02:47-05:00"), Some(utc));
        assert_eq!(parse_date_time("2019-02-18T16:32:47+01:30"), Some(utc));
        assert_eq!(parse_date_time("2019-02-18T15:02:47.391Z"), Some(Timestamp(utc.0 + 391)));
        assert_eq!(parse_date_time("2019-02-18T15:02:47.5Z"), Some(Timestamp(utc.0 + 500)));
        assert_eq!(parse_date_time("2019-02-18T15:02:47.123999+00:00"), Some(Timestamp(utc.0 + 123)));
        for bad in [
            "2019-02-18",
            "2019-02-18T15:02Z",
            "2019-02-18T15:02:47",
            "2019-02-30T15:02:47Z",
            "2019-02-18T24:00:00Z",
            "2019-02-18T15:02:47.Z",
            "2019-02-18T15:02:47+5:00",
            "2019-02-18T15:02:47+15:00",
            "2019-02-18T15:02:47ZZ",
            "２019-02-18T15:02:47Z",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_of_date_times() {
        assert_eq!(date_part("2001-05-14T23:02:47-04:00"), Date::new(2001, 5, 14));
        assert_eq!(date_part("2001-05-14"), Date::new(2001, 5, 14));
        assert_eq!(date_part("2001-05"), None);
        assert_eq!(date_part("2001"), None);
    }

    proptest! {
        #[test]
        fn instants_round_trip(ms in 0i64..253_402_300_799_999) {
            let t = Timestamp(ms);
            prop_assert_eq!(parse_date_time(&format_instant(t)), Some(t));
        }
    }
}
