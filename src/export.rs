//! An attnscope weights file → a GGUF file llama.cpp reads, holding exactly the same blocks.
//!
//! For the bench: its peer (wllama, llama.cpp in wasm) must run the numbers attnscope runs, not
//! the shipped Q4_1 file the folder was converted from, or the comparison is between two
//! different amounts of memory read per token. The blocks are copied byte for byte under
//! llama.cpp's tensor names; the metadata (architecture, tokenizer, chat template) is the source
//! GGUF's, so both engines tokenize alike. The source must be the file the folder was converted
//! from: its SHA-256 is checked against the folder's manifest.

use std::borrow::Cow;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use sha2::{Digest, Sha256};

use crate::convert::{ConvertError, gguf_name, hex, input};
use crate::format::{GgmlKind, QSafetensors, StoredTensor};

/// llama.cpp's `general.file_type` for a file of mostly these blocks (its `LLAMA_FTYPE_MOSTLY_*`).
fn file_type(kind: GgmlKind) -> u32 {
    match kind {
        GgmlKind::Q4_0 => 2,
        GgmlKind::Q8_0 => 7,
    }
}

/// Writes `out` (a GGUF) from a model folder's weights for `kind`, with the metadata of
/// `source`, the GGUF the folder was converted from.
pub fn export_gguf(folder: &Path, kind: GgmlKind, source: &Path, out: &Path) -> Result<(), ConvertError> {
    let manifest = crate::manifest::read_folder_manifest(folder)
        .map_err(|e| input(folder, e))?
        .ok_or_else(|| input(folder, "has no manifest.json: convert the model again"))?;
    let source_bytes = std::fs::read(source).map_err(|e| input(source, e))?;
    let sha = hex(&Sha256::digest(&source_bytes));
    if !manifest.source.contains(&sha) {
        return Err(input(source, format!("is not the file {} was converted from (its manifest names `{}`)", folder.display(), manifest.source)));
    }
    let mut reader = std::io::Cursor::new(&source_bytes);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| input(source, format!("not a readable GGUF file: {e}")))?;

    let weights_path = folder.join(crate::loader::weights_file_name(kind));
    let weights = std::fs::read(&weights_path).map_err(|e| input(&weights_path, e))?;
    let file = QSafetensors::read(&weights_path.display().to_string(), &weights).map_err(|e| input(&weights_path, e))?;
    let mut tensors = Vec::new();
    for (name, stored) in &file.tensors {
        let gguf = gguf_name(name).ok_or_else(|| input(&weights_path, format!("tensor `{name}` has no llama.cpp name")))?;
        let (dtype, shape, bytes) = match stored {
            StoredTensor::Quantized { kind, rows, cols, blocks } => (kind.candle(), vec![*rows, *cols], *blocks),
            StoredTensor::F32 { shape, bytes } => (GgmlDType::F32, shape.clone(), *bytes),
        };
        let storage = QStorage::from_data(Cow::Borrowed(aligned(bytes).as_slice()), &Device::Cpu, dtype).map_err(|e| input(&weights_path, e))?;
        tensors.push((gguf, QTensor::new(storage, shape).map_err(|e| input(&weights_path, e))?));
    }
    // candle writes tensor data 32-byte aligned, whatever the source's alignment was; the file
    // type names what the blocks now are.
    let (file_type, alignment) = (Value::U32(file_type(kind)), Value::U32(32));
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment" && k.as_str() != "general.file_type")
        .map(|(k, v)| (k.as_str(), v))
        .chain([("general.file_type", &file_type), ("general.alignment", &alignment)])
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Beside, then renamed: an interrupted export never leaves a half file.
    let partial = out.with_extension("gguf.partial");
    let written = std::fs::File::create(&partial).map_err(|source| ConvertError::Output { path: partial.display().to_string(), source }).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        gguf_file::write(&mut w, &metadata, &tensors).map_err(|e| input(out, e))?;
        std::io::Write::flush(&mut w).map_err(|source| ConvertError::Output { path: partial.display().to_string(), source })
    });
    written.and_then(|()| std::fs::rename(&partial, out).map_err(|source| ConvertError::Output { path: out.display().to_string(), source }))
}

/// The bytes copied to 4-byte-aligned memory: candle reads blocks and f32 values as typed slices
/// (and asserts their alignment), and a tensor's bytes inside the file may sit at any offset.
fn aligned(bytes: &[u8]) -> AlignedBytes {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    // SAFETY: the words hold at least bytes.len() bytes, and any bytes are valid u32s.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, bytes.len()) }.copy_from_slice(bytes);
    AlignedBytes { words, len: bytes.len() }
}

struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBytes {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes of `words` were written by `aligned`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}
