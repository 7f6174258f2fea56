//! Python's renderings that upstream's answers carry: `repr()` of a value, as a client that
//! does not ask for JSON gets a dict or list (both wires use it).

use serde_json::Value as Json;

/// Python's `repr()` of a JSON-shaped value.
pub fn python_repr(value: &Json) -> String {
    match value {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Json::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Json::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Json::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_render_as_python_repr() {
        let v = json!([{"resource_name": "Undefined", "mincore": 1, "maxcore": null}]);
        assert_eq!(
            python_repr(&v),
            "[{'resource_name': 'Undefined', 'mincore': 1, 'maxcore': None}]"
        );
    }
}
