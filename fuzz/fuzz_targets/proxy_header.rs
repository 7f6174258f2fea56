//! The PROXY protocol header parsers (version 1 lines and version 2 blocks).
#![no_main]

use libfuzzer_sys::fuzz_target;
use panda_api::proxy_protocol::{parse_v1, parse_v2, v2_body_len, V2_FIXED};

fuzz_target!(|data: &[u8]| {
    let _ = parse_v1(data);
    if data.len() >= V2_FIXED {
        let mut fixed = [0u8; V2_FIXED];
        fixed.copy_from_slice(&data[..V2_FIXED]);
        let _ = v2_body_len(&fixed);
        let _ = parse_v2(&fixed, &data[V2_FIXED..]);
    }
});
