//! The converter's GGUF import (header walk, candle's reader, metadata, tokenizer, tensors) on
//! arbitrary bytes: errors are fine, panics and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attnscope::convert::import_gguf_bytes(std::path::Path::new("fuzz.gguf"), data);
});
