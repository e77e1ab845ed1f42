//! The converter's GGUF import (header walk, candle's reader, metadata, tokenizer, tensors) on
//! arbitrary bytes: errors are fine, panics and huge allocations are not. Body: src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attnscope::fuzzing::gguf(data);
});
