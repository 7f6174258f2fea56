//! The bearer-token parser: JWT splitting, base64, the header and claims as JSON, and the
//! checks after them, for a VO whose issuer keys are local. Input: Origin, a NUL byte, token.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use panda_api::OidcVerifier;

fn verifier() -> &'static OidcVerifier {
    static VERIFIER: OnceLock<OidcVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("panda-fuzz-oidc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let b64 = |bytes: Vec<u8>| {
            openssl::base64::encode_block(&bytes)
                .replace('+', "-")
                .replace('/', "_")
                .trim_end_matches('=')
                .to_string()
        };
        let jwks = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k","alg":"RS256","use":"sig","n":"{}","e":"{}"}}]}}"#,
            b64(rsa.n().to_vec()),
            b64(rsa.e().to_vec())
        );
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks).expect("jwks");
        let config = format!(
            r#"{{"client_id":"c","audience":"c","issuer":"https://issuer.fuzz/","jwks_file":"{}"}}"#,
            jwks_path.display()
        );
        std::fs::write(dir.join("atlas_auth_config.json"), config).expect("config");
        let (verifier, warnings) = OidcVerifier::load(&dir, Vec::new());
        assert!(warnings.is_empty(), "{warnings:?}");
        verifier
    })
}

fuzz_target!(|data: &[u8]| {
    let (origin, token) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"atlas"[..], data),
    };
    let (Ok(origin), Ok(token)) = (std::str::from_utf8(origin), std::str::from_utf8(token)) else {
        return;
    };
    let _ = verifier().verify(token, Some(origin));
});
