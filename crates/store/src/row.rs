//! Rows read by column name: a query's columns are declared once, with their types, and the
//! SELECT list, the decoding types and the reader all come from that declaration.
//!
//! A NULL where the code needs a value, or a value of another type, is an error naming the
//! column (`StoreError::Corrupt`), never a silent 0: a schema change or a bad row shows up as
//! what it is.

use chrono::NaiveDateTime;
use panda_core::{ColumnType, Value};

use crate::error::{Result, StoreError};

/// A query's result columns, in SELECT order.
pub(crate) struct Columns(pub &'static [(&'static str, ColumnType)]);

impl Columns {
    /// `a, b, c`, for the SELECT; `prefix` qualifies each (`"r."`), or is empty.
    pub fn select_list(&self, prefix: &str) -> String {
        self.0
            .iter()
            .map(|(name, _)| format!("{prefix}{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn types(&self) -> Vec<ColumnType> {
        self.0.iter().map(|(_, t)| *t).collect()
    }

    /// A reader over one row of this query.
    pub fn read<'r>(&'static self, values: &'r [Value]) -> Row<'r> {
        Row {
            columns: self,
            values,
        }
    }
}

/// One row, read by column name.
pub(crate) struct Row<'r> {
    columns: &'static Columns,
    values: &'r [Value],
}

impl Row<'_> {
    fn value(&self, name: &str) -> Result<&Value> {
        self.columns
            .0
            .iter()
            .position(|(column, _)| *column == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("the query has no column {name}")))
    }

    fn required<T>(&self, name: &str, value: Option<T>) -> Result<T> {
        value
            .ok_or_else(|| StoreError::Corrupt(format!("column {name} is NULL or of another type")))
    }

    pub fn int(&self, name: &str) -> Result<i64> {
        let value = self.value(name)?.as_i64();
        self.required(name, value)
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.value(name)?.as_i64())
    }

    pub fn text(&self, name: &str) -> Result<String> {
        let value = self.value(name)?.as_str().map(str::to_string);
        self.required(name, value)
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>> {
        Ok(self.value(name)?.as_str().map(str::to_string))
    }

    /// Text, with NULL read as empty (columns upstream leaves NULL for "none").
    pub fn text_or_empty(&self, name: &str) -> Result<String> {
        Ok(self.opt_text(name)?.unwrap_or_default())
    }

    pub fn opt_time(&self, name: &str) -> Result<Option<NaiveDateTime>> {
        Ok(self.value(name)?.as_time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static COLUMNS: Columns = Columns(&[
        ("pandaid", ColumnType::BigInt),
        ("jobstatus", ColumnType::Text),
    ]);

    #[test]
    fn values_are_read_by_name_and_a_null_is_an_error_naming_the_column() {
        let row = [Value::Int(Some(7)), Value::Text(None)];
        let r = COLUMNS.read(&row);
        assert_eq!(r.int("pandaid").expect("id"), 7);
        assert_eq!(r.opt_text("jobstatus").expect("nullable"), None);
        let err = r.text("jobstatus").expect_err("NULL");
        assert!(err.to_string().contains("jobstatus"), "{err}");
        let err = r.int("attemptnr").expect_err("unknown");
        assert!(err.to_string().contains("no column attemptnr"), "{err}");
        assert_eq!(COLUMNS.select_list("r."), "r.pandaid, r.jobstatus");
    }
}
