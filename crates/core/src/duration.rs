//! Durations as people type them on a command line or in a script: `500ms`,
//! `30s`, `15m`, `2h`, `3d`, or plain seconds.

use std::time::Duration;

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number and a unit.
    #[error("{0:?} is not a duration like 500ms, 30s, 15m, 2h or 3d")]
    Unreadable(String),
    /// Zero: no wait at all.
    #[error("{0:?} is zero; give a duration above 0")]
    Zero(String),
    /// A bare number where a unit is required (2 what?).
    #[error("{0:?} has no unit: give one, e.g. {1}m, {1}h or {1}d")]
    NoUnit(String, String),
}

/// Parses `text`; zero is refused.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let wrong = || DurationError::Unreadable(text.to_string());
    let (n, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = n.parse().map_err(|_| wrong())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3_600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(wrong()),
    };
    if d.is_zero() {
        return Err(DurationError::Zero(text.to_string()));
    }
    Ok(d)
}

/// [`parse`], but a bare number is refused: where minutes, hours and days
/// are all likely (`--since 2`), a unit is asked for rather than guessed.
pub fn parse_with_unit(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::NoUnit(text.to_string(), t.to_string()));
    }
    parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit_and_refuses_the_rest() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("3d"), Ok(Duration::from_secs(259_200)));
        assert_eq!(parse("40"), Ok(Duration::from_secs(40)));
        for bad in ["0", "0s", "2w", "h", "", "1.5s", "-3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
