//! The `/api/v1` argument decoder: a JSON body and a query string, checked against every
//! function's declaration. Input: query, a NUL byte, body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let query = String::from_utf8_lossy(query);
    let _ = panda_api::hot::decode_v1_args(body, &query);
});
