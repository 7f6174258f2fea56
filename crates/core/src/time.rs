//! The server's clock: naive UTC, as upstream stores every timestamp.

use chrono::{NaiveDateTime, SubsecRound, Utc};

/// Now, in naive UTC, cut to microseconds (what PostgreSQL's `timestamp` keeps), so a value
/// written and read back compares equal on every backend.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// A duration in milliseconds for logs, to the microsecond: `105.959`, never the float noise
/// of `as_secs_f64() * 1000.0` (`105.95900000000001`).
pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod millis_tests {
    #[test]
    fn milliseconds_print_without_float_noise() {
        let d = std::time::Duration::from_nanos(105_959_000);
        assert_eq!(super::millis(d).to_string(), "105.959");
        assert_eq!(
            super::millis(std::time::Duration::from_micros(106)).to_string(),
            "0.106"
        );
    }
}
