//! Token lifetimes as people type them: `30s`, `15m`, `1h`, `2d`, or plain seconds.

use super::failure::Failure;

/// Parses a lifetime into seconds; zero, negative, fractional or overflowing values are refused.
pub fn parse_ttl(text: &str) -> Result<u64, Failure> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad_ttl(text)),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_ttl(text));
    }
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| bad_ttl(text))?;
    if seconds == 0 {
        return Err(Failure::invalid_argument("--ttl must be longer than zero"));
    }
    Ok(seconds)
}

fn bad_ttl(text: &str) -> Failure {
    Failure::invalid_argument(format!(
        "--ttl {text:?}: expected a duration like 30s, 15m, 1h, 2d or a number of seconds"
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn accepts_units_and_bare_seconds() {
        assert_eq!(parse_ttl("30s").ok(), Some(30));
        assert_eq!(parse_ttl("15m").ok(), Some(900));
        assert_eq!(parse_ttl("1h").ok(), Some(3_600));
        assert_eq!(parse_ttl("2d").ok(), Some(172_800));
        assert_eq!(parse_ttl("45").ok(), Some(45));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "0",
            "0h",
            "h",
            "-1h",
            "1.5h",
            "1w",
            "1hh",
            "99999999999999999999d",
            " 1 h",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
