//! Binding typed values to sqlx queries, shared by both drivers.

use chrono::NaiveDateTime;
use panda_core::Value;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

/// Binds `params` in order. A NULL is bound with its column's type, which PostgreSQL needs.
pub(crate) fn bind_all<'q, DB>(
    mut query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    params: &'q [Value],
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<f64>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<NaiveDateTime>: Encode<'q, DB> + Type<DB>,
{
    for param in params {
        query = match param {
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_deref()),
            Value::Time(v) => query.bind(*v),
        };
    }
    query
}

/// `$from, $from+1, ...`: `count` placeholders, comma-separated.
pub(crate) fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A record's values in attribute order, strings cut to their column's length (what an
/// INSERT or UPDATE of the record binds).
pub(crate) fn record_values<A: panda_core::AttrSet>(record: &panda_core::Record<A>) -> Vec<Value> {
    record
        .values()
        .iter()
        .zip(A::attributes())
        .map(|(value, attr)| match (value, attr.column_type.max_len()) {
            (Value::Text(Some(s)), Some(max)) if s.chars().count() > max => {
                Value::Text(Some(s.chars().take(max).collect()))
            }
            _ => value.clone(),
        })
        .collect()
}
