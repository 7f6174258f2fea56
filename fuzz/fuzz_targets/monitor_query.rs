//! The monitor's query strings: any bytes after `?` are decoded, bounded and read as the pages
//! read them; refused or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = panda_api::hot::monitor_query(data);
});
