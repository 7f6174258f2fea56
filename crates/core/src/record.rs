//! A row of a fixed attribute table (`JobSpec`'s 126 attributes, `FileSpec`'s 22).
//!
//! Values are kept in attribute order, so the store binds and reads them by position and
//! the wire encoders walk them by name. Setting a value applies upstream's write rules once,
//! here: NULL becomes 0 for the zero attributes, and strings are cut to the column's length.

use std::marker::PhantomData;

use crate::value::{Attribute, Value, ValueError};

/// An enum of attributes with a static metadata table in the same order.
pub trait AttrSet: Copy + 'static {
    /// All attributes, in upstream's order.
    fn attributes() -> &'static [Attribute];
    /// Position of this attribute in [`AttrSet::attributes`].
    fn index(self) -> usize;
    /// Looks an attribute up by its exact upstream name.
    fn by_name(name: &str) -> Option<Self>;
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record<A: AttrSet> {
    values: Vec<Value>,
    attrs: PhantomData<A>,
}

impl<A: AttrSet> Default for Record<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: AttrSet> Record<A> {
    /// A record with every attribute at its default: 0 for zero attributes, NULL otherwise.
    pub fn new() -> Self {
        let values = A::attributes().iter().map(default_value).collect();
        Record {
            values,
            attrs: PhantomData,
        }
    }

    /// Builds a record from values read back in attribute order (the store's path).
    /// Returns `None` when the count does not match the attribute table.
    pub fn from_values(values: Vec<Value>) -> Option<Self> {
        (values.len() == A::attributes().len()).then_some(Record {
            values,
            attrs: PhantomData,
        })
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn get(&self, attr: A) -> &Value {
        &self.values[attr.index()]
    }

    /// Sets a value, applying the zero-default and the length limit of its column.
    pub fn set(&mut self, attr: A, value: Value) {
        let meta = &A::attributes()[attr.index()];
        self.values[attr.index()] = normalize(meta, value);
    }

    /// Parses a client string (`"NULL"` allowed) into the attribute's type and sets it.
    pub fn set_str(&mut self, attr: A, raw: &str) -> Result<(), ValueError> {
        let meta = &A::attributes()[attr.index()];
        let value = Value::parse(meta.column_type, raw)?;
        self.set(attr, value);
        Ok(())
    }

    pub fn get_i64(&self, attr: A) -> Option<i64> {
        self.get(attr).as_i64()
    }

    pub fn get_str(&self, attr: A) -> Option<&str> {
        self.get(attr).as_str()
    }

    /// Name and value pairs in attribute order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Attribute, &Value)> {
        A::attributes().iter().zip(self.values.iter())
    }
}

fn default_value(meta: &Attribute) -> Value {
    if meta.zero_when_null {
        zero_of(meta)
    } else {
        meta.column_type.null()
    }
}

fn zero_of(meta: &Attribute) -> Value {
    match meta.column_type.null() {
        Value::Float(_) => Value::Float(Some(0.0)),
        _ => Value::Int(Some(0)),
    }
}

fn normalize(meta: &Attribute, value: Value) -> Value {
    match value {
        v if v.is_null() && meta.zero_when_null => zero_of(meta),
        Value::Text(Some(s)) => Value::Text(Some(truncate(s, meta.column_type.max_len()))),
        v => v,
    }
}

/// Cuts a string to at most `max` characters (not bytes), as upstream's `_limitLength` does.
fn truncate(mut s: String, max: Option<usize>) -> String {
    if let Some(max) = max {
        if let Some((byte_pos, _)) = s.char_indices().nth(max) {
            s.truncate(byte_pos);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("ééé".to_string(), Some(2)), "éé");
        assert_eq!(truncate("abc".to_string(), Some(5)), "abc");
        assert_eq!(truncate("abc".to_string(), None), "abc");
    }
}
