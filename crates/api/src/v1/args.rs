//! Arguments of `/api/v1` functions: declared once per function, checked once for all.
//!
//! Policy, as upstream's request validation: an argument the function does not declare, or a
//! missing required one, is `Argument error: ...`; a value of the wrong type is
//! `Type error: ...`. GET arguments arrive as strings and are cast to the declared type
//! (`int` via float, `bool` from `true`/`1`, a repeated key is a list, `"None"` is no value);
//! JSON bodies carry typed values, which are checked. We are lenient only where nothing can be
//! lost: a numeric string for a number, a number for a string, an integral float for an int.

use serde_json::{Map, Number, Value as Json};

/// The type an argument must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Int,
    Float,
    Bool,
    Str,
    /// A JSON object.
    Dict,
    /// A JSON object, or a string holding one.
    DictOrStr,
    /// A list of anything.
    List,
    IntList,
    StrList,
    /// Anything JSON.
    Any,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Float => "a number",
            Ty::Bool => "a boolean",
            Ty::Str => "a string",
            Ty::Dict => "a JSON object",
            Ty::DictOrStr => "a JSON object or a string",
            Ty::List => "a list",
            Ty::IntList => "a list of integers",
            Ty::StrList => "a list of strings",
            Ty::Any => "a value",
        }
    }
}

/// One declared argument.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

/// Declares that a function takes any other keyword argument as it comes (Python's
/// `**kwargs`).
pub(crate) const ANY_KEYWORD: &str = "**";

/// A required argument.
pub(crate) const fn req(name: &'static str, ty: Ty) -> Param {
    Param {
        name,
        ty,
        required: true,
    }
}

/// An optional argument.
pub(crate) const fn opt(name: &'static str, ty: Ty) -> Param {
    Param {
        name,
        ty,
        required: false,
    }
}

/// Checks `raw` against `params` and returns the arguments with their declared types.
/// `from_query` says the values are query-string text, to be cast rather than checked.
/// Whether a string anywhere in `value` holds a NUL, which no database column can store.
fn holds_nul(value: &Json) -> bool {
    match value {
        Json::String(s) => s.contains('\0'),
        Json::Array(items) => items.iter().any(holds_nul),
        Json::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Items one ID or name list may hold: upstream's own bound on PandaID lists (5,500 for
/// `get_description`), for every list of IDs or names.
pub(crate) const MAX_LIST_ITEMS: usize = crate::MAX_IDS;

pub(crate) fn validate(
    params: &[Param],
    raw: &Map<String, Json>,
    from_query: bool,
) -> Result<Map<String, Json>, String> {
    let any_keyword = params.iter().any(|p| p.name == ANY_KEYWORD);
    let mut out = Map::new();
    for (key, value) in raw {
        if !params.iter().any(|p| p.name == key) {
            if !any_keyword {
                return Err(format!(
                    "Argument error: unexpected keyword argument '{key}'"
                ));
            }
            out.insert(key.clone(), value.clone());
        }
    }
    for param in params.iter().filter(|p| p.name != ANY_KEYWORD) {
        let value = match raw.get(param.name) {
            None => None,
            Some(Json::String(s)) if from_query && s == "None" && !param.required => None,
            Some(Json::Null) if !param.required => None,
            Some(v) => Some(v),
        };
        let Some(value) = value else {
            if param.required {
                return Err(format!(
                    "Argument error: missing required argument '{}'",
                    param.name
                ));
            }
            continue;
        };
        let typed = coerce(param.ty, value, from_query).ok_or_else(|| {
            format!(
                "Type error: argument '{}' must be {}",
                param.name,
                param.ty.name()
            )
        })?;
        if holds_nul(&typed) {
            return Err(format!(
                "Type error: argument '{}' contains a NUL byte",
                param.name
            ));
        }
        if let (Ty::IntList | Ty::StrList, Some(items)) = (param.ty, typed.as_array()) {
            if items.len() > MAX_LIST_ITEMS {
                return Err(format!(
                    "Argument error: '{}' holds {} items, more than the limit of {MAX_LIST_ITEMS}",
                    param.name,
                    items.len()
                ));
            }
        }
        out.insert(param.name.to_string(), typed);
    }
    Ok(out)
}

fn int_of(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Json::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

fn float_of(value: &Json) -> Option<Json> {
    match value {
        Json::Number(_) => Some(value.clone()),
        Json::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Json::Number),
        _ => None,
    }
}

fn bool_of(value: &Json, from_query: bool) -> Option<bool> {
    match value {
        Json::Bool(b) => Some(*b),
        Json::String(s) if from_query => {
            Some(matches!(s.to_ascii_lowercase().as_str(), "true" | "1"))
        }
        Json::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Json::Number(n) => n.as_i64().filter(|i| *i == 0 || *i == 1).map(|i| i == 1),
        _ => None,
    }
}

fn text_of(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// A list from a JSON array, a repeated query key, or (query only) one value, which may be a
/// comma-separated list or JSON text.
fn items_of(value: &Json, from_query: bool) -> Option<Vec<Json>> {
    match value {
        Json::Array(items) => Some(items.clone()),
        Json::String(s) if from_query => {
            let t = s.trim();
            if t.starts_with('[') {
                match serde_json::from_str(t) {
                    Ok(Json::Array(items)) => return Some(items),
                    _ => return None,
                }
            }
            Some(
                t.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| Json::String(p.trim().to_string()))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn coerce(ty: Ty, value: &Json, from_query: bool) -> Option<Json> {
    match ty {
        Ty::Int => int_of(value).map(Json::from),
        Ty::Float => float_of(value),
        Ty::Bool => bool_of(value, from_query).map(Json::Bool),
        Ty::Str => text_of(value).map(Json::String),
        Ty::Dict => match value {
            Json::Object(_) => Some(value.clone()),
            Json::String(s) if from_query => match serde_json::from_str(s) {
                Ok(v @ Json::Object(_)) => Some(v),
                _ => None,
            },
            _ => None,
        },
        Ty::DictOrStr => match value {
            Json::Object(_) | Json::String(_) => Some(value.clone()),
            _ => None,
        },
        Ty::List => items_of(value, from_query).map(Json::Array),
        Ty::IntList => items_of(value, from_query)?
            .iter()
            .map(|v| int_of(v).map(Json::from))
            .collect::<Option<Vec<_>>>()
            .map(Json::Array),
        Ty::StrList => items_of(value, from_query)?
            .iter()
            .map(|v| text_of(v).map(Json::String))
            .collect::<Option<Vec<_>>>()
            .map(Json::Array),
        Ty::Any => {
            if from_query {
                if let Json::String(s) = value {
                    return Some(serde_json::from_str(s).unwrap_or_else(|_| value.clone()));
                }
            }
            Some(value.clone())
        }
    }
}

/// Typed reads of validated arguments (the validation guarantees the types).
pub(crate) trait ArgsExt {
    fn int(&self, name: &str) -> Option<i64>;
    fn float(&self, name: &str) -> Option<f64>;
    fn flag(&self, name: &str) -> bool;
    fn text(&self, name: &str) -> Option<&str>;
    fn ints(&self, name: &str) -> Vec<i64>;
}

impl ArgsExt for Map<String, Json> {
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Json::as_i64)
    }
    fn float(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Json::as_f64)
    }
    fn flag(&self, name: &str) -> bool {
        self.get(name).and_then(Json::as_bool).unwrap_or(false)
    }
    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Json::as_str)
    }
    fn ints(&self, name: &str) -> Vec<i64> {
        self.get(name)
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_i64).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PARAMS: &[Param] = &[
        req("job_ids", Ty::IntList),
        opt("code", Ty::Int),
        opt("soft", Ty::Bool),
        opt("name", Ty::Str),
    ];

    fn map(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn query_text_is_cast_to_the_declared_types() {
        let args = validate(
            PARAMS,
            &map(json!({"job_ids": ["1", "2"], "code": "9.0", "soft": "TRUE", "name": "None"})),
            true,
        )
        .expect("valid");
        assert_eq!(args.ints("job_ids"), vec![1, 2]);
        assert_eq!(args.int("code"), Some(9));
        assert!(args.flag("soft"));
        assert!(!args.contains_key("name"));
        let single = validate(PARAMS, &map(json!({"job_ids": "7"})), true).expect("valid");
        assert_eq!(single.ints("job_ids"), vec![7]);
    }

    #[test]
    fn json_values_are_checked() {
        let err = validate(PARAMS, &map(json!({"job_ids": ["x"]})), false).expect_err("bad");
        assert!(
            err.starts_with("Type error") && err.contains("job_ids"),
            "{err}"
        );
        let err = validate(PARAMS, &map(json!({"job_ids": 5})), false).expect_err("bad");
        assert!(err.contains("a list of integers"), "{err}");
        let err = validate(
            PARAMS,
            &map(json!({"job_ids": [1], "soft": "maybe"})),
            false,
        )
        .expect_err("bad");
        assert!(err.contains("'soft'"), "{err}");
    }

    #[test]
    fn unknown_and_missing_arguments_are_argument_errors() {
        let err = validate(
            PARAMS,
            &map(json!({"job_ids": [1], "resourceType": "x"})),
            false,
        )
        .expect_err("unknown");
        assert_eq!(
            err,
            "Argument error: unexpected keyword argument 'resourceType'"
        );
        let err = validate(PARAMS, &map(json!({"code": 1})), false).expect_err("missing");
        assert_eq!(err, "Argument error: missing required argument 'job_ids'");
    }

    #[test]
    fn nul_bytes_and_long_lists_are_refused_by_name() {
        let err = validate(
            PARAMS,
            &map(json!({"job_ids": [1], "name": "a\u{0}b"})),
            false,
        )
        .expect_err("NUL");
        assert!(err.contains("'name'") && err.contains("NUL"), "{err}");
        let many: Vec<i64> = (0..=MAX_LIST_ITEMS as i64).collect();
        let err = validate(PARAMS, &map(json!({ "job_ids": many })), false).expect_err("long");
        assert!(err.contains("limit of 5500"), "{err}");
    }
}
