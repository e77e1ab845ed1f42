//! The quantized-safetensors reader and the per-tensor checks of `Weights::load`, on arbitrary
//! bytes. Seeds: fuzz/corpus/safetensors (a tiny valid model and damaged copies, written by
//! `cargo test --release --test fuzz_corpus -- --ignored`).
#![no_main]

use attnscope::config::Config;
use attnscope::format::QSafetensors;
use attnscope::weights::Weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = QSafetensors::read("fuzz.safetensors", data) {
        let config = Config::from_json(include_bytes!("../seed_config.json")).expect("the seed config is valid");
        let _ = Weights::load("fuzz.safetensors", &st, &config);
    }
});
