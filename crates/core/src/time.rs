//! The server's clock: naive UTC, as upstream stores every timestamp.

use chrono::{NaiveDateTime, SubsecRound, Utc};

/// Now, in naive UTC, cut to microseconds (what PostgreSQL's `timestamp` keeps), so a value
/// written and read back compares equal on every backend.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}
