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
    /// A verified X.509 certificate or proxy chain (HTTPS).
    Certificate,
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
    /// Whether the legacy dispatcher's role check passes without the production role
    /// (a pilot FQAN or a `pilot_owners` DN).
    pub pilot_role: bool,
    /// Whether the credential is a limited proxy, which upstream's user functions refuse.
    pub limited_proxy: bool,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            method: AuthMethod::Anonymous,
            dn: None,
            fqans: Vec::new(),
            production: false,
            pilot_role: false,
            limited_proxy: false,
        }
    }

    pub fn local_operator() -> Identity {
        Identity {
            method: AuthMethod::LocalOperator,
            dn: Some(LOCAL_OPERATOR_DN.to_string()),
            fqans: Vec::new(),
            production: true,
            pilot_role: false,
            limited_proxy: false,
        }
    }

    /// Whether the caller is authenticated (upstream's "secure" requirement).
    pub fn is_authenticated(&self) -> bool {
        self.method != AuthMethod::Anonymous
    }

    /// Whether the legacy dispatcher's role check passes (production or pilot role).
    pub fn may_dispatch(&self) -> bool {
        self.production || self.pilot_role
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

/// FQANs with the production role, as upstream's `has_production_role`.
/// The working groups a caller holds the production role of, from FQANs
/// `/atlas/<group>/Role=production`: each group and its `gr_<group>` form, once, leaving out
/// `usatlas` (the ATLAS production role itself), as upstream lists them.
pub fn production_working_groups(fqans: &[String]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for fqan in fqans {
        let Some(rest) = fqan.strip_prefix("/atlas/") else {
            continue;
        };
        let Some((group, role)) = rest.split_once('/') else {
            continue;
        };
        if role.starts_with("Role=production")
            && !group.is_empty()
            && group != "usatlas"
            && !groups.iter().any(|g| g == group)
        {
            groups.push(group.to_string());
            groups.push(format!("gr_{group}"));
        }
    }
    groups
}

/// The working group a production task of the caller is filed under: the last
/// `/<vo>/<group>/Role=production` FQAN's group, its last `-`-separated part, lower-cased
/// (`/atlas/phys-higgs/Role=production` gives `higgs`), as upstream picks it.
pub fn primary_production_working_group(fqans: &[String]) -> Option<String> {
    let mut primary = None;
    for fqan in fqans {
        let parts: Vec<&str> = fqan.split('/').collect();
        // "", vo, group, "Role=production..."
        if let [_, vo, group, role, ..] = parts.as_slice() {
            if !vo.is_empty()
                && role.starts_with("Role=production")
                && !group.is_empty()
                && *group != "usatlas"
            {
                primary = group.rsplit('-').next().map(str::to_lowercase);
            }
        }
    }
    primary
}

pub fn is_production_fqan(fqan: &str) -> bool {
    let fqan = fqan.trim_end_matches("/Capability=NULL");
    fqan.starts_with("/atlas/usatlas/Role=production")
        || fqan.starts_with("/atlas/Role=production")
        || fqan
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(vo, role)| !vo.is_empty() && role.starts_with("Role=production"))
}

/// FQANs the legacy dispatcher accepts as a pilot (upstream's `_checkRole` with its
/// "VOMS patch": pilot roles, and any FQAN of the experiments it lists).
pub fn is_pilot_fqan(fqan: &str) -> bool {
    const PILOT_ROLES: &[&str] = &[
        "/atlas/usatlas/Role=pilot",
        "/atlas/Role=pilot",
        "/osg/Role=pilot",
        "/ams/Role=pilot",
        "/Engage/LBNE/Role=pilot",
    ];
    const PATCHED_VOS: &[&str] = &["/atlas/", "/osg/", "/cms/", "/ams/", "/Engage/LBNE/"];
    is_production_fqan(fqan)
        || PILOT_ROLES.iter().any(|r| fqan.starts_with(r))
        || PATCHED_VOS.iter().any(|v| fqan.starts_with(v))
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

    #[test]
    fn production_working_groups_are_upstreams() {
        let fqans: Vec<String> = [
            "/atlas/Role=NULL",
            "/atlas/phys-higgs/Role=production",
            "/atlas/usatlas/Role=production",
            "/atlas/phys-higgs/Role=production/Capability=NULL",
            "/atlas/det-Tile/Role=production",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            production_working_groups(&fqans),
            ["phys-higgs", "gr_phys-higgs", "det-Tile", "gr_det-Tile"]
        );
        assert_eq!(
            primary_production_working_group(&fqans).as_deref(),
            Some("tile")
        );
        assert_eq!(
            primary_production_working_group(&["/atlas/Role=production".into()]),
            None
        );
        assert!(production_working_groups(&["/atlas/Role=production".into()]).is_empty());
    }

    #[test]
    fn production_and_pilot_fqans_follow_upstream() {
        assert!(is_production_fqan("/atlas/Role=production/Capability=NULL"));
        assert!(is_production_fqan("/dune/Role=production"));
        assert!(!is_production_fqan("/atlas/Role=pilot"));
        assert!(is_pilot_fqan("/atlas/Role=pilot"));
        assert!(is_pilot_fqan("/atlas/usatlas"));
        assert!(!is_pilot_fqan("/dune"));
    }
}
