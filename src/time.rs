//! Instants: integer milliseconds since the Unix epoch (UTC), parsed from and
//! written as RFC 3339.
//!
//! Input times may carry any offset and any number of fraction digits;
//! digits below the millisecond are dropped by flooring (toward the past), so
//! `10:00:00.9999Z` is `10:00:00.999Z`. Output is always UTC with exactly three
//! fraction digits: `2026-03-01T10:15:00.000Z`.

/// Milliseconds since 1970-01-01T00:00:00Z. Also the timely timestamp.
pub type Time = i64;

pub const MS_PER_SEC: i64 = 1_000;
pub const MS_PER_MIN: i64 = 60 * MS_PER_SEC;
pub const MS_PER_HOUR: i64 = 60 * MS_PER_MIN;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// The range of accepted instants: RFC 3339's four-digit years, in UTC
/// (0000-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z). A record or
/// `data` time outside it is not a time (a dead letter, or a rule's `at`
/// that does not match); a decision time that a delay would push past the
/// end is the end ([`MAX_TIME`]), so that every output time can be written.
pub const MIN_TIME: Time = -719_528 * MS_PER_DAY;
pub const MAX_TIME: Time = 2_932_897 * MS_PER_DAY - 1;

/// Parses an RFC 3339 `date-time` (section 5.6): `YYYY-MM-DDTHH:MM:SS`,
/// optional fraction of any length, then `Z` or `±HH:MM`. `T` and `Z` may be
/// lower case. Not accepted: a space for `T`, a missing offset, leap second
/// `:60` (no instant to map it to), and the ISO 8601 forms outside RFC 3339
/// (basic format, `+HHMM`, no seconds, comma decimals).
pub fn parse_rfc3339(s: &str) -> Result<Time, String> {
    match parse_bytes(s.as_bytes()) {
        Some(t) if (MIN_TIME..=MAX_TIME).contains(&t) => Ok(t),
        Some(_) => Err(format!(
            "{s:?} is outside the years 0000 to 9999 in UTC; write a time from \"0000-01-01T00:00:00Z\" to \"9999-12-31T23:59:59.999Z\""
        )),
        None => Err(format!(
            "{s:?} is not an RFC 3339 time; write e.g. \"2026-03-01T10:15:00Z\" or \"2026-03-01T11:15:00.250+01:00\""
        )),
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

fn parse_bytes(b: &[u8]) -> Option<Time> {
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        match i - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (digits(b, i + 1, 2)?, digits(b, i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    Some(
        days * MS_PER_DAY + hour * MS_PER_HOUR + minute * MS_PER_MIN + second * MS_PER_SEC + millis
            - offset_min * MS_PER_MIN,
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as the 24 bytes `YYYY-MM-DDTHH:MM:SS.mmmZ` (years 0–9999), without
/// allocating: outputs and the generator write many of these.
pub fn rfc3339_bytes(t: Time) -> [u8; 24] {
    let (days, rem) = (t.div_euclid(MS_PER_DAY), t.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    debug_assert!((0..=9999).contains(&year), "year {year} out of range");
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month as i64);
    put(8, 2, day as i64);
    put(11, 2, rem / MS_PER_HOUR);
    put(14, 2, rem / MS_PER_MIN % 60);
    put(17, 2, rem / MS_PER_SEC % 60);
    put(20, 3, rem % MS_PER_SEC);
    b
}

/// `t` as an RFC 3339 UTC string with milliseconds.
pub fn format_rfc3339(t: Time) -> String {
    String::from_utf8(rfc3339_bytes(t).to_vec()).expect("ASCII")
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Duration units, largest first, with the names errors give them.
const DURATION_UNITS: [(&str, &str, i64); 5] = [
    ("d", "days", MS_PER_DAY),
    ("h", "hours", MS_PER_HOUR),
    ("m", "minutes", MS_PER_MIN),
    ("s", "seconds", MS_PER_SEC),
    ("ms", "milliseconds", 1),
];

/// The wall clock, in milliseconds since the Unix epoch. Only the live
/// job reads it (to release event time on idle partitions, §7); replays
/// never do.
pub fn now_ms() -> Time {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Time)
}

/// Parses a duration such as `"30m"`, `"1h30m"`, `"1h 30m"`, `"2d"`,
/// `"500ms"`, `"0s"`: numbers with units `d` (24 hours), `h`, `m` (or
/// `min`), `s`, `ms`, each unit at most once and from largest to smallest,
/// so that a duration reads one way only (`"30m 1h 1h"` and `"1m1h"` are
/// rejected). Spaces may separate the parts. Used for spec fields; never
/// negative.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. \"30m\" or \"1h30m\""
        )
    };
    let too_long = || format!("{s:?} is too long a duration; write at most 106751991167d");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let bytes = s.as_bytes();
    let (mut i, mut total) = (0usize, 0i64);
    // The unit of each part, as an index into DURATION_UNITS.
    let mut units = Vec::new();
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let n: i64 = s[start..i].parse().map_err(|_| too_long())?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "d" => 0,
            "h" => 1,
            "m" | "min" => 2,
            "s" => 3,
            "ms" => 4,
            _ => return Err(bad()),
        };
        units.push(unit);
        total = n
            .checked_mul(DURATION_UNITS[unit].2)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
    }
    if let Some(pair) = units.windows(2).find(|pair| pair[1] <= pair[0]) {
        let name = |u: usize| format!("{} ({})", DURATION_UNITS[u].1, DURATION_UNITS[u].0);
        let what = if pair[0] == pair[1] {
            format!("names {} twice", name(pair[0]))
        } else {
            format!("names {} after {}", name(pair[1]), name(pair[0]))
        };
        return Err(format!(
            "{s:?} {what}; write each unit once, largest first (d, h, m, s, ms): {:?}",
            canonical_duration(total)
        ));
    }
    Ok(total)
}

/// `ms` written with each unit once, largest first: 9_000_000 is `"2h30m"`.
fn canonical_duration(mut ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, _, size) in DURATION_UNITS {
        if ms >= size {
            out += &format!("{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted instants are the years 0000 to 9999 in UTC, whatever the
    /// offset written; both ends write back as they read.
    #[test]
    fn accepts_exactly_the_four_digit_years_in_utc() {
        for (s, t) in [
            ("0000-01-01T00:00:00Z", MIN_TIME),
            ("0000-01-01T01:00:00+01:00", MIN_TIME),
            ("9999-12-31T23:59:59.999Z", MAX_TIME),
            ("9999-12-31T22:59:59.999-01:00", MAX_TIME),
        ] {
            assert_eq!(parse_rfc3339(s), Ok(t), "{s}");
        }
        assert_eq!(format_rfc3339(MIN_TIME), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(MAX_TIME), "9999-12-31T23:59:59.999Z");
        for s in ["0000-01-01T00:59:59+01:00", "9999-12-31T23:00:00-01:00"] {
            let e = parse_rfc3339(s).unwrap_err();
            assert!(e.contains("outside the years 0000 to 9999"), "{s}: {e}");
        }
    }

    /// Every byte of the fixed part is checked: any other byte at a digit's
    /// place, and anything but the separator at a separator's, is rejected.
    #[test]
    fn every_place_of_the_fixed_part_is_checked() {
        const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
        let valid = *b"2026-04-01T10:00:00Z";
        assert!(parse_bytes(&valid).is_some());
        for place in 0..19 {
            for byte in 0..=255u8 {
                let mut line = valid;
                line[place] = byte;
                let allowed = if DIGITS.contains(&place) {
                    byte.is_ascii_digit()
                } else {
                    byte == valid[place] || (place == 10 && byte == b't')
                };
                if !allowed {
                    assert!(parse_bytes(&line).is_none(), "{}", line.escape_ascii());
                }
            }
        }
    }

    #[test]
    fn parses_offsets_and_floors_sub_milliseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2026-03-01T11:15:00+01:00").unwrap(),
            parse_rfc3339("2026-03-01T10:15:00Z").unwrap()
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.9999Z").unwrap(), 999);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.9995Z").unwrap(), -1);
        assert_eq!(
            parse_rfc3339("2026-03-01t10:15:00.1234567890123z").unwrap(),
            parse_rfc3339("2026-03-01T10:15:00.123Z").unwrap()
        );
        assert_eq!(
            parse_rfc3339("2026-03-01T10:15:00.5-00:30").unwrap(),
            parse_rfc3339("2026-03-01T10:45:00.500Z").unwrap()
        );
        assert_eq!(
            parse_rfc3339("2028-02-29T00:00:00Z").unwrap(),
            1_835_395_200_000
        );
        for bad in [
            "2026-03-01T10:15:00",
            "yesterday",
            "2026-03-01 10:15:00Z",
            "2026-03-01T10:15Z",
            "2026-03-01T10:15:00+0100",
            "2026-03-01T10:15:00+01",
            "2026-03-01T10:15:00,5Z",
            "20260301T101500Z",
            "2026-03-01T10:15:00+01:00:00",
            "2026-03-01T10:15:00+24:00",
            "2026-03-01T10:15:60Z",
            "2026-02-29T10:15:00Z",
            "2026-03-01T10:15:00.Z",
            "2026-03-01T10:15:00Zjunk",
            "2026-13-01T10:15:00Z",
            "２026-03-01T10:15:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = parse_rfc3339("2026-03-01T10:15:00.042+02:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-03-01T08:15:00.042Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for t in [
            0,
            1,
            86_399_999,
            1_772_000_000_123,
            -86_400_001,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
        }
    }

    #[test]
    fn every_day_from_1900_to_2200_matches_a_calendar_walk() {
        let (mut y, mut m, mut d) = (1900, 1, 1);
        for day in -25_567..84_000i64 {
            let t = day * MS_PER_DAY + 45_296_789;
            assert_eq!(
                format_rfc3339(t),
                format!("{y:04}-{m:02}-{d:02}T12:34:56.789Z")
            );
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = match m {
                2 => 28 + leap as u32,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            (d, m, y) = if d < len {
                (d + 1, m, y)
            } else if m < 12 {
                (1, m + 1, y)
            } else {
                (1, 1, y + 1)
            };
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), 30 * MS_PER_MIN);
        assert_eq!(parse_duration("1h30m").unwrap(), 90 * MS_PER_MIN);
        assert_eq!(parse_duration("1h 30m").unwrap(), 90 * MS_PER_MIN);
        assert_eq!(
            parse_duration(" 2d 3h  4min 5s 6ms ").unwrap(),
            2 * MS_PER_DAY + 3 * MS_PER_HOUR + 4 * MS_PER_MIN + 5_006
        );
        assert_eq!(parse_duration("90s").unwrap(), 90 * MS_PER_SEC);
        assert_eq!(parse_duration("90m").unwrap(), 90 * MS_PER_MIN);
        assert_eq!(parse_duration("2d").unwrap(), 2 * MS_PER_DAY);
        assert_eq!(parse_duration("500ms").unwrap(), 500);
        assert_eq!(parse_duration("1s500ms").unwrap(), 1_500);
        assert_eq!(parse_duration("0s").unwrap(), 0);
        for bad in ["", "h", "10", "10x", "-5m", "1.5h", "1 h", "1h,30m"] {
            assert!(
                parse_duration(bad).unwrap_err().contains("not a duration"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("106751991167d").unwrap(),
            106_751_991_167 * MS_PER_DAY
        );
        for long in ["106751991168d", "99999999999999999999ms"] {
            assert!(
                parse_duration(long).unwrap_err().contains("too long"),
                "{long}"
            );
        }
    }

    /// Each unit at most once, largest first; the error says the same
    /// duration written that way.
    #[test]
    fn durations_name_each_unit_once_largest_first() {
        for (s, says) in [
            (
                "30m 1h 1h",
                "\"30m 1h 1h\" names hours (h) after minutes (m); write each unit once, largest first (d, h, m, s, ms): \"2h30m\"",
            ),
            (
                "1h 1h",
                "\"1h 1h\" names hours (h) twice; write each unit once, largest first (d, h, m, s, ms): \"2h\"",
            ),
            (
                "1m1h",
                "names hours (h) after minutes (m); write each unit once, largest first (d, h, m, s, ms): \"1h1m\"",
            ),
            (
                "1min 2m",
                "names minutes (m) twice; write each unit once, largest first (d, h, m, s, ms): \"3m\"",
            ),
            (
                "30s 1d",
                "names days (d) after seconds (s); write each unit once, largest first (d, h, m, s, ms): \"1d30s\"",
            ),
            ("500ms 1s", ": \"1s500ms\""),
            ("0s 0s", ": \"0s\""),
            ("90m 90m", ": \"3h\""),
            ("23h 25h", ": \"2d\""),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains(says), "{s}: {e}");
            // What the error says to write is itself accepted.
            let write = e.rsplit(": ").next().unwrap().trim_matches('"');
            assert!(parse_duration(write).is_ok(), "{s}: {write}");
        }
    }
}
