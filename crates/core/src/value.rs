//! Typed column values and the metadata that describes each attribute's column.
//!
//! A value always carries its SQL type, even when it is NULL: PostgreSQL needs a typed
//! parameter for a NULL timestamp, and a typed NULL keeps binding code free of guesses.

use chrono::NaiveDateTime;

/// The SQL type of an attribute's column, as in upstream's PostgreSQL schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    SmallInt,
    Int,
    BigInt,
    /// `numeric(precision, scale)`; carried as a float in memory.
    Decimal(u8, u8),
    /// `varchar(n)`.
    VarChar(u32),
    /// `char(n)`, blank-padded by the database.
    Char(u32),
    /// `timestamp without time zone`, naive UTC.
    Timestamp,
    /// `text` (upstream's CLOB columns).
    Text,
}

impl ColumnType {
    /// The NULL of this column's type.
    pub fn null(self) -> Value {
        match self {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => Value::Int(None),
            ColumnType::Decimal(..) => Value::Float(None),
            ColumnType::VarChar(_) | ColumnType::Char(_) | ColumnType::Text => Value::Text(None),
            ColumnType::Timestamp => Value::Time(None),
        }
    }

    /// Whether `value` fits this column as both databases store it: integers within the
    /// column's width, decimals finite and within their precision, text without NUL bytes
    /// (PostgreSQL cannot store them). `Err` says what is wrong, for a message that names
    /// the field. Text longer than a `varchar` is not an error: it is cut, as upstream does.
    pub fn check(self, value: &Value) -> Result<(), &'static str> {
        match (self, value) {
            (ColumnType::SmallInt, Value::Int(Some(v))) if i16::try_from(*v).is_err() => {
                Err("out of range for a smallint column")
            }
            (ColumnType::Int, Value::Int(Some(v))) if i32::try_from(*v).is_err() => {
                Err("out of range for an integer column")
            }
            (ColumnType::Decimal(precision, scale), Value::Float(Some(v))) => {
                let digits = i32::from(precision.saturating_sub(scale));
                if !v.is_finite() {
                    Err("not a finite number")
                } else if v.abs() >= 10f64.powi(digits) {
                    Err("out of range for its numeric column")
                } else {
                    Ok(())
                }
            }
            (_, Value::Int(Some(v))) if matches!(self, ColumnType::Decimal(..)) => {
                self.check(&Value::Float(Some(*v as f64)))
            }
            (_, Value::Float(Some(v))) if !v.is_finite() => Err("not a finite number"),
            (_, Value::Text(Some(t))) if t.contains('\0') => Err("contains a NUL byte"),
            _ => Ok(()),
        }
    }

    /// Maximum length in characters for string columns.
    pub fn max_len(self) -> Option<usize> {
        match self {
            ColumnType::VarChar(n) | ColumnType::Char(n) => Some(n as usize),
            _ => None,
        }
    }
}

/// One attribute of a spec: its upstream name, its column type and its NULL policy.
#[derive(Clone, Copy, Debug)]
pub struct Attribute {
    /// The attribute name exactly as upstream spells it (`PandaID`, `jobStatus`, ...).
    pub name: &'static str,
    pub column_type: ColumnType,
    /// Upstream's `_zeroAttrs`: a NULL is stored as 0.
    pub zero_when_null: bool,
}

impl Attribute {
    /// The column name: PostgreSQL folds upstream's names to lower case.
    pub fn column(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}

/// A typed, nullable column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Time(Option<NaiveDateTime>),
}

/// Why a string could not become a value of a column's type.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("value {value:?} is not a valid {expected}")]
pub struct ValueError {
    pub value: String,
    pub expected: &'static str,
}

/// Timestamp formats accepted from clients: upstream writes `YYYY-MM-DD HH:MM:SS[.ffffff]`,
/// JSON encoders write ISO 8601 with a `T`.
const TIME_FORMATS: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(
            self,
            Value::Int(None) | Value::Float(None) | Value::Text(None) | Value::Time(None)
        )
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => *v,
            Value::Float(v) => v.map(|f| f as i64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(v) => v.as_deref(),
            _ => None,
        }
    }

    pub fn as_time(&self) -> Option<NaiveDateTime> {
        match self {
            Value::Time(v) => *v,
            _ => None,
        }
    }

    /// Parses a client string into a value of `column_type`. The string `"NULL"` and the
    /// empty string for non-text columns mean NULL, as in upstream's specs.
    pub fn parse(column_type: ColumnType, raw: &str) -> Result<Value, ValueError> {
        if raw == "NULL" {
            return Ok(column_type.null());
        }
        let trimmed = raw.trim();
        let fail = |expected| ValueError {
            value: raw.to_string(),
            expected,
        };
        match column_type {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
                if trimmed.is_empty() || trimmed == "None" {
                    return Ok(Value::Int(None));
                }
                let value = trimmed
                    .parse::<i64>()
                    .ok()
                    .or_else(|| {
                        // Python renders some integers as floats (`12.0`); only those that
                        // are whole and fit, never a saturated cast.
                        trimmed
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                            .map(|f| f as i64)
                    })
                    .map(|v| Value::Int(Some(v)))
                    .ok_or_else(|| fail("integer"))?;
                column_type
                    .check(&value)
                    .map(|_| value)
                    .map_err(|_| fail(integer_name(column_type)))
            }
            ColumnType::Decimal(..) => {
                if trimmed.is_empty() || trimmed == "None" {
                    return Ok(Value::Float(None));
                }
                let value = trimmed
                    .parse::<f64>()
                    .map(|v| Value::Float(Some(v)))
                    .map_err(|_| fail("number"))?;
                column_type
                    .check(&value)
                    .map(|_| value)
                    .map_err(|_| fail("number within the column's precision"))
            }
            ColumnType::Timestamp => {
                if trimmed.is_empty() || trimmed == "None" {
                    return Ok(Value::Time(None));
                }
                TIME_FORMATS
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(trimmed, f).ok())
                    .map(|t| Value::Time(Some(t)))
                    .ok_or_else(|| fail("timestamp (YYYY-MM-DD HH:MM:SS)"))
            }
            ColumnType::VarChar(_) | ColumnType::Char(_) | ColumnType::Text => {
                if raw.contains('\0') {
                    return Err(fail("text without NUL bytes"));
                }
                Ok(Value::Text(Some(raw.to_string())))
            }
        }
    }

    /// Renders the value as upstream's specs print it: NULL as `"NULL"`, times with a space.
    pub fn render(&self) -> String {
        match self {
            Value::Int(Some(v)) => v.to_string(),
            Value::Float(Some(v)) => render_float(*v),
            Value::Text(Some(s)) => s.clone(),
            Value::Time(Some(t)) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            _ => "NULL".to_string(),
        }
    }
}

fn integer_name(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::SmallInt => "integer between -32768 and 32767",
        ColumnType::Int => "integer between -2147483648 and 2147483647",
        _ => "integer",
    }
}

/// Integral decimals print without a fraction, as Python prints `Decimal('5')`.
fn render_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_string_parses_to_a_typed_null() {
        assert_eq!(
            Value::parse(ColumnType::BigInt, "NULL"),
            Ok(Value::Int(None))
        );
        assert_eq!(
            Value::parse(ColumnType::Timestamp, "NULL"),
            Ok(Value::Time(None))
        );
        assert_eq!(
            Value::parse(ColumnType::VarChar(10), "NULL"),
            Ok(Value::Text(None))
        );
    }

    #[test]
    fn integers_accept_python_float_renderings() {
        assert_eq!(
            Value::parse(ColumnType::Int, "12.0"),
            Ok(Value::Int(Some(12)))
        );
        assert!(Value::parse(ColumnType::Int, "twelve").is_err());
    }

    #[test]
    fn values_must_fit_their_columns() {
        assert!(Value::parse(ColumnType::Int, "2147483648").is_err());
        assert!(Value::parse(ColumnType::Int, "2147483647").is_ok());
        assert!(Value::parse(ColumnType::SmallInt, "40000").is_err());
        assert!(Value::parse(ColumnType::BigInt, "1e30").is_err());
        assert!(Value::parse(ColumnType::Decimal(5, 2), "1000").is_err());
        assert!(Value::parse(ColumnType::Decimal(5, 2), "999.5").is_ok());
        assert!(Value::parse(ColumnType::Decimal(5, 2), "NaN").is_err());
        assert!(Value::parse(ColumnType::VarChar(10), "a\0b").is_err());
        assert_eq!(
            ColumnType::Text.check(&Value::Text(Some("nul\0".into()))),
            Err("contains a NUL byte")
        );
    }

    #[test]
    fn timestamps_accept_space_and_t_separators() {
        let a = Value::parse(ColumnType::Timestamp, "2026-11-25 10:00:00").ok();
        let b = Value::parse(ColumnType::Timestamp, "2026-11-25T10:00:00.000").ok();
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn render_prints_null_and_integral_decimals_like_upstream() {
        assert_eq!(Value::Int(None).render(), "NULL");
        assert_eq!(Value::Float(Some(5.0)).render(), "5");
        assert_eq!(Value::Float(Some(1.25)).render(), "1.25");
    }
}
