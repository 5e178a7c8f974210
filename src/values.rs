//! clap value parsers whose errors say what is wrong with the value, for numbers that must be
//! positive (so `--clients -10` is not read as a flag, and not as a huge count) and secrets
//! that must not be empty. clap prefixes each error with the flag and the value.

/// A count of at least 1.
pub fn positive_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| "too large".to_string()),
        Ok(_) => Err("must be a whole number of at least 1".into()),
        Err(_) => Err("not a whole number (e.g. 300)".into()),
    }
}

/// A rate as people type it: `5000` or `5000/s` per second, `300000/m` per minute,
/// `18000000/h` per hour (spaces around the parts allowed). Returns events per second.
fn rate_per_s(text: &str, example: &str) -> Result<f64, String> {
    let (number, unit) = match text.split_once('/') {
        Some((number, unit)) => (number.trim(), unit.trim()),
        None => (text.trim(), "s"),
    };
    let per_s = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} after '/': use /s, /m or /h (e.g. {example}/s)"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "not a number (e.g. {example}, {example}/s or {}/m)",
            example_per_minute(example)
        )
    })?;
    Ok(value / per_s)
}

fn example_per_minute(example: &str) -> String {
    example
        .parse::<u64>()
        .map_or_else(|_| example.to_string(), |n| (n * 60).to_string())
}

/// A finite rate above zero, in any form [`rate_per_s`] reads; per second.
pub fn positive_rate(text: &str) -> Result<f64, String> {
    match rate_per_s(text, "500")? {
        x if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err("must be a number above 0 (per second, or per minute with /m)".into()),
    }
}

/// A finite rate of zero or more, in any form [`rate_per_s`] reads; per second.
pub fn non_negative_rate(text: &str) -> Result<f64, String> {
    match rate_per_s(text, "2000")? {
        x if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err("must be 0 or a positive number (per second, or per minute with /m)".into()),
    }
}

/// A secret with at least one character: an empty one would sign with an empty key.
pub fn non_empty_secret(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty: give the secret, or leave the flag out".into());
    }
    Ok(text.to_string())
}

/// One item of a comma-separated list, spaces around it ignored (`a, b` is `a` and `b`).
pub fn list_item(text: &str) -> Result<String, String> {
    let item = text.trim();
    if item.is_empty() {
        return Err("an empty item in the list".into());
    }
    Ok(item.to_string())
}

/// `--reconnect-backoff INITIAL,CAP,JITTER` (`1s,30s,19s`): the delay after a first failure,
/// the cap of its doubling, and the most random delay added after the cap.
pub fn backoff(text: &str) -> Result<imlab_core::client::BackoffConfig, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [initial, max, jitter] = parts[..] else {
        return Err(format!(
            "{text:?}: give INITIAL,CAP,JITTER, three durations (e.g. 1s,30s,19s)"
        ));
    };
    let duration = |what: &str, part: &str| {
        humantime::parse_duration(part).map_err(|error| format!("{what} {part:?}: {error}"))
    };
    let config = imlab_core::client::BackoffConfig {
        initial: duration("INITIAL", initial)?,
        max: duration("CAP", max)?,
        jitter_max: duration("JITTER", jitter)?,
    };
    if config.initial.is_zero() {
        return Err(format!(
            "INITIAL {initial:?}: must be positive, or a refused client would retry in a busy loop"
        ));
    }
    if config.max < config.initial {
        return Err(format!("CAP {max:?} is below INITIAL {initial:?}"));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_with_the_reason() {
        assert_eq!(positive_count("300"), Ok(300));
        assert!(positive_count("-10").unwrap_err().contains("at least 1"));
        assert!(positive_count("0").unwrap_err().contains("at least 1"));
        assert!(
            positive_count("ten")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert_eq!(non_negative_rate("0"), Ok(0.0));
        assert!(
            non_negative_rate("-5")
                .unwrap_err()
                .contains("0 or a positive")
        );
        assert!(positive_rate("0").unwrap_err().contains("above 0"));
        assert!(positive_rate("inf").is_err());
        assert!(non_empty_secret("").unwrap_err().contains("empty"));
        assert_eq!(list_item(" whatsapp "), Ok("whatsapp".into()));
    }

    #[test]
    fn rates_take_the_forms_people_type() {
        for (text, per_s) in [
            ("5000", 5000.0),
            ("5000/s", 5000.0),
            ("300000/m", 5000.0),
            ("18000000/h", 5000.0),
            (" 2.5 / s ", 2.5),
            ("30/m", 0.5),
        ] {
            assert_eq!(non_negative_rate(text), Ok(per_s), "{text}");
            assert_eq!(positive_rate(text), Ok(per_s), "{text}");
        }
        assert_eq!(non_negative_rate("0/m"), Ok(0.0));
        for (text, error) in [
            ("5000/d", "unknown unit \"d\" after '/': use /s, /m or /h"),
            ("5000/", "unknown unit \"\""),
            ("/s", "not a number (e.g. 2000, 2000/s or 120000/m)"),
            ("5k/s", "not a number"),
            ("-5/m", "0 or a positive number"),
            ("inf/s", "0 or a positive number"),
        ] {
            let got = non_negative_rate(text).unwrap_err();
            assert!(got.contains(error), "{text}: {got}");
        }
        assert!(positive_rate("0/s").unwrap_err().contains("above 0"));
        assert!(positive_rate("1e400").unwrap_err().contains("above 0"));
    }

    #[test]
    fn a_backoff_is_three_durations() {
        let config = backoff(" 500ms, 30s ,0s").unwrap();
        assert_eq!(
            (config.initial, config.max, config.jitter_max),
            (
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(30),
                std::time::Duration::ZERO
            )
        );
    }
}
