//! The legacy dispatcher's body decoder: gzip sniffed, then JSON or a form, under the default
//! limits. The first byte picks the content type the client claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = match pick % 4 {
        0 => "application/json",
        1 => "application/x-www-form-urlencoded",
        2 => "text/plain",
        _ => "",
    };
    let _ = panda_api::hot::decode_legacy(body, content_type);
});
