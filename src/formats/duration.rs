//! Go durations, as Go's `time.ParseDuration` parses them.

use std::time::Duration;

const DURATION_MSG: &str = r#"must be a duration such as "5m", "90s" or "1h30m""#;
/// 1<<63: the magnitude of Go's most negative `time.Duration`, in nanoseconds.
const GO_DURATION_NEG_LIMIT: u64 = 1 << 63;

/// A Go `time.Duration` as a sign and a magnitude; `negative` is false for zero, and the
/// magnitude is at most 2^63-1 ns (2^63 ns when negative), the range of Go's int64 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// Whether the duration is below zero (never true for a zero magnitude).
    pub negative: bool,
    /// The absolute value of the duration.
    pub magnitude: Duration,
}

impl GoDuration {
    /// The duration as a `std::time::Duration`, or None when it is negative.
    pub fn as_std(&self) -> Option<Duration> {
        if self.negative {
            None
        } else {
            Some(self.magnitude)
        }
    }
}

/// The nanoseconds in one of Go's duration units.
fn go_duration_unit(unit: &[u8]) -> Option<u64> {
    match unit {
        b"ns" => Some(1),
        // "us", "µs" (U+00B5 MICRO SIGN) and "μs" (U+03BC GREEK SMALL LETTER MU), in UTF-8.
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => Some(1_000),
        b"ms" => Some(1_000_000),
        b"s" => Some(1_000_000_000),
        b"m" => Some(60 * 1_000_000_000),
        b"h" => Some(3_600 * 1_000_000_000),
        _ => None,
    }
}

/// Go's `leadingInt`: the leading `[0-9]*` of `s`, or None above 2^63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    for &c in &s[..digits] {
        if x > GO_DURATION_NEG_LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > GO_DURATION_NEG_LIMIT {
            return None;
        }
    }
    Some((x, &s[digits..]))
}

/// Go's `leadingFraction`: the leading `[0-9]*` of `s` as a numerator and a scale, dropping the
/// digits that no longer fit.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let mut x: u64 = 0;
    let mut scale = 1.0_f64;
    let mut overflow = false;
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    for &c in &s[..digits] {
        if overflow {
            continue;
        }
        if x > (GO_DURATION_NEG_LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > GO_DURATION_NEG_LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..])
}

/// Parses a Go duration ("300ms", "-1.5h", "2h45m") exactly as Go's `time.ParseDuration`.
pub fn parse_go_duration(value: &str) -> Result<GoDuration, String> {
    let invalid = || DURATION_MSG.to_string();
    let mut s = value.as_bytes();
    let mut negative = false;
    if let Some((&sign, rest)) = s.split_first()
        && (sign == b'-' || sign == b'+')
    {
        negative = sign == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while let Some(&first) = s.first() {
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
        s = rest;
        let pre = before != s.len();
        let mut post = false;
        let (mut f, mut scale) = (0_u64, 1.0_f64);
        if let Some((&b'.', rest)) = s.split_first() {
            let before = rest.len();
            (f, scale, s) = leading_fraction(rest);
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s
            .iter()
            .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(invalid());
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit = go_duration_unit(unit).ok_or_else(invalid)?;
        if v > GO_DURATION_NEG_LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // As Go: float64 keeps fractions of hours nanosecond-accurate.
            v = v.saturating_add((f as f64 * (unit as f64 / scale)) as u64);
            if v > GO_DURATION_NEG_LIMIT {
                return Err(invalid());
            }
        }
        // Go's uint64 sum can wrap here ("-9223372036854775808ns9223372036854775808ns" gives 0);
        // a checked sum refuses that instead.
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > GO_DURATION_NEG_LIMIT {
            return Err(invalid());
        }
    }
    if !negative && total > GO_DURATION_NEG_LIMIT - 1 {
        return Err(invalid());
    }
    Ok(GoDuration {
        negative: negative && total != 0,
        magnitude: Duration::from_nanos(total),
    })
}

/// Parses a Go duration that must be greater than zero.
pub fn positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_go_duration(value)?;
    match duration.as_std() {
        Some(magnitude) if !magnitude.is_zero() => Ok(magnitude),
        _ => Err("must be greater than zero".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---------------------------------------------------------------- Go durations

    const NS: i128 = 1;
    const US: i128 = 1_000;
    const MS: i128 = 1_000_000;
    const SEC: i128 = 1_000_000_000;
    const MIN: i128 = 60 * SEC;
    const HOUR: i128 = 60 * MIN;

    fn signed_nanos(d: GoDuration) -> i128 {
        let magnitude = d.magnitude.as_nanos() as i128;
        if d.negative { -magnitude } else { magnitude }
    }

    /// Go's own `parseDurationTests` table (src/time/time_test.go), plus a few more.
    #[test]
    fn parse_go_duration_matches_go_accepted_table() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("5s", 5 * SEC),
            ("30s", 30 * SEC),
            ("1478s", 1478 * SEC),
            ("-5s", -5 * SEC),
            ("+5s", 5 * SEC),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SEC),
            ("5.6s", 5 * SEC + 600 * MS),
            ("5.s", 5 * SEC),
            (".5s", 500 * MS),
            ("1.0s", SEC),
            ("1.00s", SEC),
            ("1.004s", SEC + 4 * MS),
            ("1.0040s", SEC + 4 * MS),
            ("100.00100s", 100 * SEC + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12\u{b5}s", 12 * US),
            ("12\u{3bc}s", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * SEC),
            ("15m", 15 * MIN),
            ("16h", 16 * HOUR),
            ("3h30m", 3 * HOUR + 30 * MIN),
            ("10.5s4m", 4 * MIN + 10 * SEC + 500 * MS),
            ("-2m3.4s", -(2 * MIN + 3 * SEC + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * HOUR + 9 * MIN + 14 * SEC + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("0.3333333333333333333h", 20 * MIN),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX as i128),
            ("9223372036854775.807us", i64::MAX as i128),
            ("9223372036s854ms775us807ns", i64::MAX as i128),
            ("-9223372036854775808ns", i64::MIN as i128),
            ("-9223372036854775.808us", i64::MIN as i128),
            ("-9223372036s854ms775us808ns", i64::MIN as i128),
            ("-2562047h47m16.854775808s", i64::MIN as i128),
            ("0.100000000000000000000h", 6 * MIN),
            (
                "0.830103483285477580700h",
                49 * MIN + 48 * SEC + 372_539_827 * NS,
            ),
            // More: the brief's examples and zero spellings.
            ("1.5h", 90 * MIN),
            ("1h30m", 90 * MIN),
            ("90s", 90 * SEC),
            ("5m", 5 * MIN),
            ("1.s", SEC),
            ("0s", 0),
            ("-0s", 0),
            ("0.0h", 0),
            ("00s", 0),
            ("1m1m", 2 * MIN),
            ("1s1.5s", 2 * SEC + 500 * MS),
        ];
        for &(input, expected) in cases {
            match parse_go_duration(input) {
                Ok(d) => assert_eq!(signed_nanos(d), expected, "{input:?}"),
                Err(e) => panic!("{input:?} should parse: {e}"),
            }
        }
    }

    #[test]
    fn parse_go_duration_matches_go_refused_table() {
        let cases = [
            "",
            "3",
            "-",
            "+",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ff}ff",
            "hello \u{ff}ff world",
            "\u{FFFD}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            // More.
            "00",
            "-00",
            "1",
            "1h30",
            "1 s",
            " 1s",
            "1s ",
            "1S",
            "1H",
            "1sec",
            "--1s",
            "+-1s",
            "1.5.5s",
            "1..5s",
            "1e3s",
            "0x10s",
            "1_000s",
            "1µ",
            "1\u{3bc}",
            "1s-1s",
            "99999999999999999999999ns",
            "2562048h",
            "-9223372036854775808ns9223372036854775808ns",
            "9223372036854775807ns1ns",
            "é",
            "1é",
            "1sé",
        ];
        for input in cases {
            assert_eq!(
                parse_go_duration(input),
                Err(r#"must be a duration such as "5m", "90s" or "1h30m""#.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn parse_go_duration_sign_and_zero() {
        let zero = GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        };
        for input in ["0", "-0", "+0", "0s", "-0s", "-0.0h"] {
            assert_eq!(parse_go_duration(input), Ok(zero), "{input:?}");
        }
        assert_eq!(
            parse_go_duration("-1.5s"),
            Ok(GoDuration {
                negative: true,
                magnitude: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse_go_duration("-9223372036854775808ns").map(|d| d.magnitude),
            Ok(Duration::from_nanos(1 << 63))
        );
    }

    #[test]
    fn go_duration_as_std() {
        let positive = GoDuration {
            negative: false,
            magnitude: Duration::from_secs(3),
        };
        assert_eq!(positive.as_std(), Some(Duration::from_secs(3)));
        let negative = GoDuration {
            negative: true,
            magnitude: Duration::from_secs(3),
        };
        assert_eq!(negative.as_std(), None);
        assert_eq!(
            parse_go_duration("0").map(|d| d.as_std()),
            Ok(Some(Duration::ZERO))
        );
        assert_eq!(
            parse_go_duration("1h").map(|d| d.as_std()),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert_eq!(parse_go_duration("-1h").map(|d| d.as_std()), Ok(None));
    }

    #[test]
    fn positive_duration_accepts_positive_values() {
        assert_eq!(positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(positive_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(positive_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(positive_duration("+1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            positive_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
    }

    #[test]
    fn positive_duration_refuses_zero_negative_and_malformed_values() {
        for input in [
            "0",
            "0s",
            "-0",
            "+0",
            "0.0h",
            "-1s",
            "-1ns",
            "-9223372036854775808ns",
        ] {
            assert_eq!(
                positive_duration(input),
                Err("must be greater than zero".to_string()),
                "{input:?}"
            );
        }
        for input in ["", "10", "ten seconds", "1d", "-"] {
            assert_eq!(
                positive_duration(input),
                Err(DURATION_MSG.to_string()),
                "{input:?}"
            );
        }
    }
}
