//! Number and duration formatting shared by the charts and the HTML page, so a value reads
//! the same in both.

/// A number with about three significant digits and no exponent: 0.00123, 1.23, 12.3, 1234.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    let decimals = if magnitude == 0.0 || magnitude >= 100.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        // 0.0123 -> 4 decimals: three significant digits.
        (2 - magnitude.log10().floor() as i32).clamp(0, 9) as usize
    };
    trim_zeros(format!("{value:.decimals$}"))
}

/// A duration in seconds as a person says it: "850 ms", "4.2 s", "4m45s", "2.5 h".
pub(crate) fn duration_s(seconds: f64) -> String {
    if !seconds.is_finite() {
        return seconds.to_string();
    }
    if seconds < 1.0 {
        return format!("{} ms", number(seconds * 1000.0));
    }
    if seconds < 60.0 {
        return format!("{} s", number(seconds));
    }
    if seconds < 3600.0 {
        let whole = seconds.round() as u64;
        let (minutes, rest) = (whole / 60, whole % 60);
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    format!("{} h", number(seconds / 3600.0))
}

fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers() {
        let cases = [
            (0.0, "0"),
            (0.001234, "0.00123"),
            (0.5, "0.5"),
            (1.234, "1.23"),
            (12.34, "12.3"),
            (1234.6, "1235"),
            (-2.5, "-2.5"),
        ];
        for (value, expected) in cases {
            assert_eq!(super::number(value), expected, "{value}");
        }
    }

    #[test]
    fn durations() {
        let cases = [
            (0.85, "850 ms"),
            (4.2, "4.2 s"),
            (285.0, "4m45s"),
            (300.0, "5m"),
            (9000.0, "2.5 h"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(super::duration_s(seconds), expected, "{seconds}");
        }
    }
}
