//! config.json and manifest.json parsing, and the memory budget computed from any config that
//! parses (its arithmetic must not overflow whatever the sizes). Body: src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attnscope::fuzzing::config(data);
    let _ = attnscope::fuzzing::manifest(data);
});
