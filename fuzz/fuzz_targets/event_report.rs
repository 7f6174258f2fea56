//! Event-range reports: whatever a pilot or Harvester sends as `updateEventRanges`'
//! `eventRanges` (versions 0 to 2, zip chunks included), and the range IDs in it, decode or
//! are refused with a reason; nothing panics. Input: a version byte, then the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = panda_api::hot::decode_event_report(data);
});
