//! The DER, X.509 and VOMS AC parsers: the first byte picks whether the rest is a whole
//! certificate or the value of a VOMS AC extension held by a fixed certificate.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::x509::X509;
use panda_api::X509Verifier;

struct Fixture {
    verifier: X509Verifier,
    holder: X509,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("panda-fuzz-{}", std::process::id()));
        let (cas, voms) = (dir.join("certificates"), dir.join("vomsdir"));
        std::fs::create_dir_all(&cas).expect("CA dir");
        std::fs::create_dir_all(&voms).expect("voms dir");
        let verifier = X509Verifier::load(&cas, &voms, Vec::new(), Vec::new()).expect("verifier");
        let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
            .expect("key");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "fuzz holder").expect("cn");
        let name = name.build();
        let mut builder = X509::builder().expect("builder");
        // The serial of the seed user certificate in scripts/fuzz.sh, so seeded ACs pass the
        // holder check and reach the signer.
        let serial = openssl::bn::BigNum::from_u32(77).expect("bn");
        builder
            .set_serial_number(&serial.to_asn1_integer().expect("serial"))
            .expect("serial");
        builder.set_subject_name(&name).expect("subject");
        builder.set_issuer_name(&name).expect("issuer");
        builder.set_pubkey(&key).expect("pubkey");
        builder
            .sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        Fixture {
            verifier,
            holder: builder.build(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    if pick % 2 == 0 {
        let _ = fixture.verifier.inspect_untrusted(rest);
    } else {
        let _ = fixture.verifier.inspect_voms_untrusted(rest, &fixture.holder);
    }
});
