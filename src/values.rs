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

/// A finite rate above zero (per second).
pub fn positive_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be a number above 0 (per second)".into()),
        Err(_) => Err("not a number (e.g. 500)".into()),
    }
}

/// A finite rate of zero or more (per second).
pub fn non_negative_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be 0 or a positive number (per second)".into()),
        Err(_) => Err("not a number (e.g. 2000)".into()),
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
}
