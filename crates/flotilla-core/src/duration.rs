//! Durations as people write them in configuration files and on the command line: `30s`,
//! `500ms`, `2m`, `1h`, or a bare number of seconds.

use std::time::Duration;

/// The longest duration flotilla accepts for any wait, lease or timeout. A bound keeps every
/// deadline computable (an `Instant` plus a huge duration overflows) and catches typos.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `text` as a duration: a number with unit `ms`, `s`, `m` or `h` (`1.5s` too), or a
/// bare number of seconds. Negative, non-finite and longer than [`MAX_DURATION`] are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(malformed(text)),
    };
    let value: f64 = number.parse().map_err(|_| malformed(text))?;
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(malformed(text));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "`{}` is longer than the most flotilla accepts ({})",
            text.trim(),
            format_duration(MAX_DURATION)
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn malformed(text: &str) -> String {
    format!(
        "`{}` is not a duration: write a number with a unit, like 30s, 500ms, 2m or 1h",
        text.trim()
    )
}

/// A duration the way [`parse_duration`] reads it back: `1h`, `2m`, `30s`, `1.5s`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{}s", duration.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        let cases = [
            ("30", 30_000),
            ("30s", 30_000),
            ("1.5s", 1_500),
            ("500ms", 500),
            ("2m", 120_000),
            (" 1h ", 3_600_000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn nonsense_and_huge_values_are_errors_not_panics() {
        for text in [
            "",
            "s",
            "-5s",
            "ten",
            "5 parsecs",
            "1e400",
            "NaN",
            "inf",
            "1..2s",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        let huge = parse_duration("99999999999999999999").expect_err("too long");
        assert!(
            huge.contains("longer than") && huge.contains("24h"),
            "{huge}"
        );
        assert!(parse_duration("25h").is_err());
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
    }

    #[test]
    fn formatting_reads_back() {
        for ms in [0, 250, 1_500, 30_000, 120_000, 3_600_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
