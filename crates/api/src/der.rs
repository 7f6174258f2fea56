//! A minimal DER reader: enough to walk a VOMS attribute certificate, which OpenSSL does not
//! parse. Every read is bounds-checked; malformed input is an error, never a panic.

/// One DER element: its tag, its content, and the whole encoding (tag, length, content).
#[derive(Clone, Copy, Debug)]
pub struct Element<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;

/// Reads the element at the start of `input`; returns it and the rest.
pub fn read(input: &[u8]) -> Result<(Element<'_>, &[u8]), String> {
    let bad = || "malformed DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    if tag & 0x1f == 0x1f {
        return Err("DER tags above 30 are not supported".into());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
    let length = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let mut length = 0usize;
        for &b in &rest[..n] {
            length = (length << 8) | b as usize;
        }
        rest = &rest[n..];
        length
    };
    if rest.len() < length {
        return Err(bad());
    }
    let header = input.len() - rest.len();
    Ok((
        Element {
            tag,
            content: &rest[..length],
            raw: &input[..header + length],
        },
        &rest[length..],
    ))
}

/// All elements of a constructed element's content.
pub fn children(content: &[u8]) -> Result<Vec<Element<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (element, next) = read(rest)?;
        out.push(element);
        rest = next;
    }
    Ok(out)
}

/// Reads an element that must have `tag`.
pub fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(Element<'a>, &'a [u8]), String> {
    let (element, rest) = read(input)?;
    if element.tag != tag {
        return Err(format!("{what}: unexpected DER tag {:#04x}", element.tag));
    }
    Ok((element, rest))
}

/// The dotted form of an OID's content.
pub fn oid_string(content: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in content.iter().enumerate() {
        value = (value << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if parts.is_empty() && i < content.len() {
                let (first, second) = match value {
                    v if v < 40 => (0, v),
                    v if v < 80 => (1, v - 40),
                    v => (2, v - 80),
                };
                parts.push(first.to_string());
                parts.push(second.to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        }
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_elements_and_oids() {
        // SEQUENCE { OID 1.3.6.1.4.1.8005.100.100.4, OCTET STRING "ab" }
        let der = [
            0x30, 0x10, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xbe, 0x45, 0x64, 0x64, 0x04,
            0x04, 0x02, b'a', b'b',
        ];
        let (seq, rest) = expect(&der, SEQUENCE, "test").expect("sequence");
        assert!(rest.is_empty());
        let items = children(seq.content).expect("children");
        assert_eq!(oid_string(items[0].content), "1.3.6.1.4.1.8005.100.100.4");
        assert_eq!(items[1].content, b"ab");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(read(&[0x30, 0x05, 0x01]).is_err());
        assert!(read(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(read(&[]).is_err());
    }
}
