//! Text ↔ token ids: the Hugging Face `tokenizers` crate (the same code natively and in wasm),
//! the instruct model's chat template, human-readable token labels, and a streaming decoder
//! that never emits half a UTF-8 character.
//!
//! Streaming: a byte-level BPE token can be a fragment of a character (an emoji is often
//! three or four tokens). The decoder keeps the crate's `DecodeStream` state itself and calls
//! its step function (`step_decode_stream`), which only emits text once it no longer ends in
//! U+FFFD; if the crate reports an inconsistent prefix it falls back to decoding everything
//! generated so far and emitting the new suffix.

use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.json could not be read ({0}). Download or convert the model again.")]
    Parse(String),
    #[error("tokenizer.json has {tokenizer} tokens but config.json says vocab_size {config}: they come from different models. Convert the model again.")]
    VocabMismatch { tokenizer: usize, config: usize },
    #[error("could not tokenize the text: {0}")]
    Encode(String),
}

/// SmolLM2-Instruct's template (ChatML), with its default system message, exactly as its
/// tokenizer_config `chat_template` renders one user turn with `add_generation_prompt`.
pub const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

pub fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

pub struct TextTokenizer {
    inner: Tokenizer,
    /// Ids that end a generation: `<|im_end|>`, `<|endoftext|>` and the config's eos.
    stop_ids: Vec<u32>,
    /// Byte-level alphabet: char → the byte it stands for.
    byte_of: std::collections::HashMap<char, u8>,
}

impl TextTokenizer {
    pub fn from_json(bytes: &[u8], vocab_size: usize, eos: Option<u32>) -> Result<Self, TokenizerError> {
        let inner = crate::tokenizer_json::read(bytes).map_err(TokenizerError::Parse)?;
        let n = inner.get_vocab_size(true);
        if n != vocab_size {
            return Err(TokenizerError::VocabMismatch { tokenizer: n, config: vocab_size });
        }
        let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| inner.token_to_id(t)).collect();
        stop_ids.extend(eos);
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(TextTokenizer { inner, stop_ids, byte_of: byte_level_alphabet().into_iter().map(|(b, c)| (c, b)).collect() })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Token ids of `text` (special tokens such as `<|im_start|>` written in the text are
    /// recognised); with `chat`, the text is one user turn in the chat template.
    pub fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, TokenizerError> {
        let text = if chat { chat_prompt(text) } else { text.to_string() };
        let enc = self.inner.encode(text.as_str(), false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// A label for one token, for heatmap axes: its text with spaces and newlines kept; a token
    /// that is only part of a UTF-8 character shows its bytes as `<0xNN>`.
    pub fn label(&self, id: u32) -> String {
        let Some(piece) = self.inner.id_to_token(id) else { return format!("<{id}>") };
        if self.inner.get_added_vocabulary().is_special_token(&piece) {
            return piece;
        }
        let bytes: Vec<u8> = piece
            .chars()
            .flat_map(|ch| match self.byte_of.get(&ch) {
                Some(&b) => vec![b],
                None => ch.to_string().into_bytes(),
            })
            .collect();
        let mut label = String::new();
        for chunk in bytes.utf8_chunks() {
            label.push_str(chunk.valid());
            for b in chunk.invalid() {
                label.push_str(&format!("<0x{b:02X}>"));
            }
        }
        label
    }

    pub fn labels(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&id| self.label(id)).collect()
    }
}

/// GPT-2's byte-level alphabet: each byte is drawn as a printable character (bytes that are
/// printable stand for themselves; the rest are shifted to U+0100 and up).
pub fn byte_level_alphabet() -> Vec<(u8, char)> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut n = 0u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (b, char::from(b))
            } else {
                n += 1;
                (b, char::from_u32(255 + n).expect("U+0100..U+0143 are chars"))
            }
        })
        .collect()
}

/// Incremental detokenization for generated ids (see the module note).
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
    /// Everything generated, for the fallback path.
    all: Vec<u32>,
    emitted: String,
}

impl StreamDecoder {
    /// The text this token completes: empty while a character is still incomplete.
    pub fn step(&mut self, tok: &TextTokenizer, id: u32) -> String {
        self.all.push(id);
        let step = tokenizers::tokenizer::step_decode_stream(
            std::ops::Deref::deref(&tok.inner),
            vec![id],
            false,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        );
        let text = match step {
            Ok(Some(text)) => text,
            Ok(None) => String::new(),
            Err(_) => {
                // Re-decode everything and emit what is new and complete.
                let full = tok.decode(&self.all);
                let full = full.trim_end_matches('\u{FFFD}');
                let new = full.strip_prefix(self.emitted.as_str()).unwrap_or("").to_string();
                self.ids = self.all.clone();
                self.prefix = full.to_string();
                self.prefix_index = self.all.len();
                new
            }
        };
        self.emitted.push_str(&text);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_a_bijection() {
        let a = byte_level_alphabet();
        let chars: std::collections::HashSet<char> = a.iter().map(|&(_, c)| c).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(a[b' ' as usize].1, 'Ġ');
        assert_eq!(a[b'\n' as usize].1, 'Ċ');
    }
}
