//! The quantized-safetensors reader and the per-tensor checks of `Weights::load`, on arbitrary
//! bytes. Seeds: fuzz/corpus/safetensors (a tiny valid model and damaged copies, written by
//! `cargo test --release --test fuzz_corpus -- --ignored`). Body: src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attnscope::fuzzing::safetensors(data);
});
