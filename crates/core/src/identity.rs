//! Who is calling, as every layer sees it: a DN in upstream's legacy slash format, the FQANs
//! or token groups, and whether the caller holds the production role. How an identity is
//! established (certificates, tokens, local mode) is the web tier's business.

/// The DN given to credential-less loopback callers in local mode.
pub const LOCAL_OPERATOR_DN: &str = "/CN=local operator";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credentials, or credentials we do not verify yet.
    Anonymous,
    /// A loopback caller trusted by `trust_loopback`.
    LocalOperator,
    /// A verified OIDC bearer token.
    Token,
}

/// The caller as the handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub method: AuthMethod,
    /// Distinguished name in upstream's legacy slash format, if known.
    pub dn: Option<String>,
    /// VOMS FQANs or token groups.
    pub fqans: Vec<String>,
    /// Whether the caller holds the production role.
    pub production: bool,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            method: AuthMethod::Anonymous,
            dn: None,
            fqans: Vec::new(),
            production: false,
        }
    }

    pub fn local_operator() -> Identity {
        Identity {
            method: AuthMethod::LocalOperator,
            dn: Some(LOCAL_OPERATOR_DN.to_string()),
            fqans: Vec::new(),
            production: true,
        }
    }

    /// Whether the caller is authenticated (upstream's "secure" requirement).
    pub fn is_authenticated(&self) -> bool {
        self.method != AuthMethod::Anonymous
    }
}

/// Upstream's `clean_user_id`: the user name inside a DN, e.g.
/// `/DC=ch/DC=cern/OU=Users/CN=ab/CN=123456/CN=Anna Bell` gives `Anna Bell`. Organisation
/// components, numeric and proxy CNs, robot and nickname CNs and trailing numbers are dropped;
/// of several remaining CNs the last one is the name.
pub fn clean_user_id(dn: &str) -> String {
    let mut names: Vec<String> = Vec::new();
    for component in dn.split('/').filter(|c| !c.is_empty()) {
        let Some((key, value)) = component.split_once('=') else {
            names.push(component.to_string());
            continue;
        };
        let value = value.trim();
        let dropped = matches!(key, "DC" | "O" | "OU" | "C" | "L")
            || (key == "CN"
                && (value.chars().all(|c| c.is_ascii_digit())
                    || value == "proxy"
                    || value == "limited proxy"
                    || value.starts_with("Robot:")
                    || value.starts_with("nickname:")));
        if !dropped {
            names.push(value.to_string());
        }
    }
    let name = names.last().cloned().unwrap_or_default();
    let name = strip_numbers(&name);
    let name = match name.to_ascii_lowercase().find("/email") {
        Some(i) if i > 0 => name[..i].to_string(),
        _ => name,
    };
    name.chars()
        .filter(|c| !matches!(c, '(' | ')' | '\''))
        .collect::<String>()
        .split_whitespace()
        .filter(|word| !word.contains('@'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops " 1234" and "_1234" number suffixes inside a name.
fn strip_numbers(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let digits = chars[i + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if (c == ' ' || c == '_') && digits > 0 {
            i += 1 + digits;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_name_is_the_last_meaningful_cn() {
        assert_eq!(
            clean_user_id(
                "/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=abell/CN=123456/CN=Anna Bell"
            ),
            "Anna Bell"
        );
        assert_eq!(clean_user_id("/CN=local operator"), "local operator");
        assert_eq!(
            clean_user_id("/DC=org/CN=Jo Doe 1234/CN=proxy/CN=limited proxy"),
            "Jo Doe"
        );
        assert_eq!(
            clean_user_id("/C=DE/O=GermanGrid/CN=Robot: pilot/CN=Tom Tester"),
            "Tom Tester"
        );
    }
}
