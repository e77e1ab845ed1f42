//! Reading tokenizer.json: the same tokenizer the `tokenizers` crate's own loader builds, sooner.
//!
//! The crate reads the `model` field through an untagged helper: serde first buffers the whole
//! model (49,152 vocabulary entries and 48,900 merges for SmolLM2) as `Content`, copies it into a
//! `serde_json::Value` map, and only then reads the BPE from that. Natively that was 82–95 ms of
//! a ~135 ms model build, the largest step of a warm load. Here a BPE model is read straight into
//! its fields and given to the crate's `BpeBuilder`, and the file's other fields are put together as the
//! crate's loader does (`TokenizerVisitor` in its `serialization.rs`): the builder, then the
//! added tokens in file order. Any other model type, merges written as "a b" strings, or a file
//! this path cannot read, goes to the crate's loader, whose errors are the ones reported.

use serde::Deserialize;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationParams};

/// The tokenizer described by a tokenizer.json file, or the crate's error for it.
pub fn read(bytes: &[u8]) -> Result<Tokenizer, String> {
    match read_bpe(bytes) {
        Some(tokenizer) => Ok(tokenizer),
        None => Tokenizer::from_bytes(bytes).map_err(|e| e.to_string()),
    }
}

/// The fields the crate's loader reads (a missing `Option` is `None`); `id` of an added token is
/// only checked there (a warning).
#[derive(Deserialize)]
struct File {
    version: String,
    truncation: Option<TruncationParams>,
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: Bpe,
}

/// A BPE model's fields, as the crate's `BPE` deserializer reads them, but with the merges as
/// pairs only: the crate accepts pairs or "a b" strings through an untagged enum, which buffers
/// all 48,900 of them as `Content` first. A file with the strings goes to the crate's loader.
#[derive(Deserialize)]
struct Bpe {
    #[serde(rename = "type")]
    kind: Option<String>,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: ahash::AHashMap<String, u32>,
    merges: Vec<(String, String)>,
}

impl Bpe {
    fn build(self) -> Option<BPE> {
        if self.kind.is_some_and(|kind| kind != "BPE") {
            return None;
        }
        // An absent or null flag leaves the builder's default, false, as the crate's reader does.
        let mut b = BPE::builder()
            .vocab_and_merges(self.vocab, self.merges)
            .fuse_unk(self.fuse_unk.unwrap_or(false))
            .byte_fallback(self.byte_fallback.unwrap_or(false))
            .ignore_merges(self.ignore_merges.unwrap_or(false));
        if let Some(p) = self.dropout {
            b = b.dropout(p);
        }
        if let Some(t) = self.unk_token {
            b = b.unk_token(t);
        }
        if let Some(p) = self.continuing_subword_prefix {
            b = b.continuing_subword_prefix(p);
        }
        if let Some(s) = self.end_of_word_suffix {
            b = b.end_of_word_suffix(s);
        }
        b.build().ok()
    }
}

/// The tokenizer read by this module's own path, or `None` where `read` needs the crate's loader.
pub fn read_bpe(bytes: &[u8]) -> Option<Tokenizer> {
    let file: File = serde_json::from_slice(bytes).ok()?;
    if file.version != "1.0" {
        return None;
    }
    let built = TokenizerBuilder::new()
        .with_model(ModelWrapper::BPE(file.model.build()?))
        .with_normalizer(file.normalizer)
        .with_pre_tokenizer(file.pre_tokenizer)
        .with_post_processor(file.post_processor)
        .with_decoder(file.decoder)
        .with_truncation(file.truncation)
        .with_padding(file.padding)
        .build()
        .ok()?;
    let mut tokenizer = Tokenizer::from(built);
    tokenizer.add_tokens(file.added_tokens).ok()?;
    Some(tokenizer)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The crate's loader and this one give the same tokenizer: it serializes to the same JSON and
    /// encodes the same text (special tokens among it) to the same ids.
    fn assert_same_as_crate(json: &[u8], texts: &[&str], read_here: bool) {
        assert_eq!(read_bpe(json).is_some(), read_here, "a BPE model with merges as pairs is read here, any other by the crate");
        let (ours, crates) = (read(json).unwrap(), Tokenizer::from_bytes(json).unwrap());
        assert_eq!(ours.to_string(false).unwrap(), crates.to_string(false).unwrap());
        for text in texts {
            let ids = |t: &Tokenizer| t.encode(*text, false).unwrap().get_ids().to_vec();
            assert_eq!(ids(&ours), ids(&crates), "{text:?}");
        }
    }

    fn bpe_file() -> Vec<u8> {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "Ġ", "Ġab", "<s>", "<x>"].map(String::from).to_vec();
        crate::convert::build_bpe_tokenizer(&tokens, &["a b".into(), "ab c".into(), "Ġ ab".into()], &[1, 1, 1, 1, 1, 1, 1, 3, 4], "smollm").unwrap()
    }

    #[test]
    fn a_bpe_tokenizer_is_the_one_the_crate_builds() {
        assert_same_as_crate(&bpe_file(), &["abc ab", "<s>abc<x> c", ""], true);
    }

    #[test]
    fn added_tokens_normalizer_and_processor_are_kept() {
        let mut json: serde_json::Value = serde_json::from_slice(&bpe_file()).unwrap();
        json["normalizer"] = serde_json::json!({"type": "Lowercase"});
        // Fields left out altogether, as hand-written files do.
        json.as_object_mut().unwrap().remove("truncation");
        json.as_object_mut().unwrap().remove("padding");
        json["model"].as_object_mut().unwrap().remove("fuse_unk");
        json["post_processor"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        json["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": 9, "content": "ABC", "single_word": false, "lstrip": true, "rstrip": false, "normalized": true, "special": false}));
        assert_same_as_crate(json.to_string().as_bytes(), &["ABC abc", " ABCAB"], true);
    }

    #[test]
    fn other_models_old_merges_and_bad_files_take_the_crates_loader() {
        let word_level = r#"{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"a":0,"b":1,"[UNK]":2},"unk_token":"[UNK]"}}"#;
        assert_same_as_crate(word_level.as_bytes(), &["a b c"], false);
        let mut legacy: serde_json::Value = serde_json::from_slice(&bpe_file()).unwrap();
        let merges: Vec<String> = legacy["model"]["merges"].as_array().unwrap().iter().map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap())).collect();
        legacy["model"]["merges"] = merges.into();
        assert_same_as_crate(legacy.to_string().as_bytes(), &["abc ab"], false);
        let truncated = &bpe_file()[..100];
        assert!(read_bpe(truncated).is_none());
        assert_eq!(read(truncated).unwrap_err(), Tokenizer::from_bytes(truncated).unwrap_err().to_string());
        let mut json: serde_json::Value = serde_json::from_slice(&bpe_file()).unwrap();
        json["version"] = "2.0".into();
        assert!(read(json.to_string().as_bytes()).unwrap_err().contains("Unknown tokenizer version"));
    }
}
