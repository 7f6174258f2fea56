//! Task refinement: whatever `task/submit` stored as a task's parameters, the refiner and the
//! contents feeder either refine it or refuse it with a reason; they never panic. Input: the
//! parameters' JSON text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = panda_api::hot::refine_task_parameters(data);
});
