//! The monitor's log tarball listing: a pilot made the bytes; a listing or an error, never a
//! panic, and never more than the listing's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = panda_api::hot::monitor_log_listing(data);
});
