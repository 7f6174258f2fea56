//! Percent-encoding for the URLs the server writes: RFC 3986's unreserved characters stay,
//! every other byte becomes `%XX`.

/// Percent-encodes `text`; a space becomes `+` when `space_as_plus` (form encoding, Python's
/// `quote_plus`), else `%20` (a path segment).
pub fn percent_encode(text: &str, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(byte as char)
            }
            b' ' if space_as_plus => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
