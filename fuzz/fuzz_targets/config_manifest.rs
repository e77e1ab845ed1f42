//! config.json and manifest.json parsing, and the memory budget computed from any config that
//! parses (its arithmetic must not overflow whatever the sizes).
#![no_main]

use attnscope::config::Config;
use attnscope::manifest::Manifest;
use attnscope::model::memory_needed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::from_json(data) {
        let _ = memory_needed(&c, u64::MAX / 4, c.max_position_embeddings, Some(c.max_position_embeddings));
        assert!(c.n_heads % c.n_kv_heads == 0 && c.dim == c.n_heads * c.head_dim);
    }
    if let Ok(m) = Manifest::from_json("fuzz/manifest.json", data) {
        for name in m.files.keys() {
            let _ = m.check_bytes("fuzz/manifest.json", name, data);
        }
    }
});
