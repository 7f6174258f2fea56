//! A reader for upstream's `panda_server.cfg`: the INI dialect of Python's `configparser`.
//!
//! Supported, because upstream's files use it: `[section]` headers; `key = value` and
//! `key: value`; `#` and `;` comment lines; values continued on indented lines (the
//! `[daemon] config` JSON spans many). Keys keep their case. Every entry remembers its line, so
//! a bad value can be reported with file, line and key. A hand-written reader (not an INI
//! crate) because those drop line numbers and continuation lines.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

/// Parses the whole text; the first malformed line is an error.
pub fn parse(text: &str) -> Result<Vec<Entry>, IniError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    // Whether an indented line may continue the previous entry's value.
    let mut can_continue = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        let indented = raw.starts_with([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if indented && can_continue {
            if let Some(last) = entries.last_mut() {
                if !last.value.is_empty() {
                    last.value.push('\n');
                }
                last.value.push_str(trimmed);
                continue;
            }
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| IniError {
                line,
                message: format!("section header {trimmed:?} lacks its closing ']'"),
            })?;
            section = Some(name.trim().to_string());
            can_continue = false;
            continue;
        }
        let split = trimmed.find(['=', ':']).ok_or_else(|| IniError {
            line,
            message: format!("expected 'key = value', found {trimmed:?}"),
        })?;
        let (key, value) = (trimmed[..split].trim(), trimmed[split + 1..].trim());
        if key.is_empty() {
            return Err(IniError {
                line,
                message: "a value without a key".into(),
            });
        }
        let section = section.clone().ok_or_else(|| IniError {
            line,
            message: format!("key {key:?} appears before any [section] header"),
        })?;
        // Python's configparser (strict, as upstream uses it) refuses a repeated key.
        if let Some(first) = entries
            .iter()
            .find(|e| e.section == section && e.key.eq_ignore_ascii_case(key))
        {
            return Err(IniError {
                line,
                message: format!(
                    "key {key:?} appears twice in [{section}] (first on line {})",
                    first.line
                ),
            });
        }
        entries.push(Entry {
            section,
            key: key.to_string(),
            value: value.to_string(),
            line,
        });
        can_continue = true;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_keys_and_both_separators() {
        let entries =
            parse("# c\n[server]\ndbhost = db1\ndbport: 5432\n; x\n[daemon]\nenable = True\n")
                .expect("valid");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].section, "server");
        assert_eq!(entries[1].value, "5432");
        assert_eq!(entries[1].line, 4);
        assert_eq!(entries[2].section, "daemon");
    }

    #[test]
    fn indented_lines_continue_a_value() {
        let text = "[daemon]\nconfig = {\n    \"a\": {\"period\": 5}\n\n    }\nenable = True\n";
        let entries = parse(text).expect("valid");
        assert_eq!(entries[0].value, "{\n\"a\": {\"period\": 5}\n}");
        assert_eq!(entries[1].key, "enable");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(parse("[server]\njunk\n").map_err(|e| e.line), Err(2));
        assert_eq!(parse("dbhost = x\n").map_err(|e| e.line), Err(1));
        assert_eq!(parse("[server\n").map_err(|e| e.line), Err(1));
        assert_eq!(
            parse("[server]\na = 1\nA = 2\n").map_err(|e| e.line),
            Err(3)
        );
    }
}
