//! Quantized safetensors: GGML block data stored as is inside an ordinary safetensors file.
//!
//! A quantized weight is a `U8` tensor holding its raw GGML blocks, shaped `[rows, bytes_per_row]`;
//! its GGML type and logical shape `[rows, cols]` live in the file's `__metadata__` under
//! `ggml.<tensor name>` as `"<type>:<rows>,<cols>"` (e.g. `"q8_0:576,1536"`), because the
//! per-tensor JSON keeps only dtype, shape and offsets. Everything else (norms) is `F32`.
//! Blocks run along `cols`, the input dimension, as in GGUF. See docs/FORMAT.md.
//!
//! Why blocks and not dequantized floats: candle's quantized kernels (simd128 in the browser) take
//! the blocks directly, so the bytes fetched are the bytes multiplied. Alignment: the safetensors
//! writer puts F32 tensors first (sorted by dtype alignment), so every block blob starts at a
//! multiple of 4 and has an even length (34-byte Q8_0, 18-byte Q4_0 blocks): each block's f16
//! scale is 2-byte aligned in the file. The loader copies blobs into typed block vectors anyway,
//! so a buffer that arrives misaligned is still read correctly.
//!
//! This module knows the container, not the model: names are opaque here.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Written to `__metadata__["format"]`, so a plain safetensors file is told apart.
pub const FORMAT_TAG: &str = "attnscope-qsafetensors/1";

/// GGML block formats this project reads and writes. Our own names and numbering: candle's
/// GGML type ids are private to it, and the strings are what the file and the CLI say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlKind {
    /// 32 weights: one f16 scale, 32 signed bytes. 34 bytes per block.
    Q8_0,
    /// 32 weights: one f16 scale, 32 unsigned nibbles offset by 8. 18 bytes per block.
    Q4_0,
}

impl GgmlKind {
    pub const ALL: [GgmlKind; 2] = [GgmlKind::Q8_0, GgmlKind::Q4_0];

    pub fn name(self) -> &'static str {
        match self {
            GgmlKind::Q8_0 => "q8_0",
            GgmlKind::Q4_0 => "q4_0",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        32
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlKind::Q8_0 => 34,
            GgmlKind::Q4_0 => 18,
        }
    }

    pub fn candle(self) -> candle_core::quantized::GgmlDType {
        match self {
            GgmlKind::Q8_0 => candle_core::quantized::GgmlDType::Q8_0,
            GgmlKind::Q4_0 => candle_core::quantized::GgmlDType::Q4_0,
        }
    }

    /// Bytes needed for a `[rows, cols]` matrix, or None if `cols` does not fill whole blocks or
    /// the product overflows (it can on wasm32, where usize is 32 bits).
    pub fn bytes_for(self, rows: usize, cols: usize) -> Option<usize> {
        if cols % self.block_size() != 0 {
            return None;
        }
        rows.checked_mul(cols / self.block_size())?.checked_mul(self.type_size())
    }
}

/// One tensor as stored: a view into the file's bytes, nothing copied.
#[derive(Debug, Clone)]
pub enum StoredTensor<'a> {
    Quantized { kind: GgmlKind, rows: usize, cols: usize, blocks: &'a [u8] },
    F32 { shape: Vec<usize>, bytes: &'a [u8] },
}

impl StoredTensor<'_> {
    /// The logical shape, as the model sees it.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            StoredTensor::Quantized { rows, cols, .. } => vec![*rows, *cols],
            StoredTensor::F32 { shape, .. } => shape.clone(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            StoredTensor::Quantized { kind, .. } => kind.name(),
            StoredTensor::F32 { .. } => "f32",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{file}: not a readable safetensors file ({why}). The file is damaged or incomplete: download or convert it again.")]
    Container { file: String, why: String },
    #[error("{file}: tensor `{tensor}` {why}. The file is damaged or was written by another tool: convert the model again.")]
    Tensor { file: String, tensor: String, why: String },
    #[error("{file}: this is a plain safetensors file, not attnscope's quantized format (no `format` = `{FORMAT_TAG}` in its metadata). Convert it with `attnscope-convert`.")]
    NotQuantizedSafetensors { file: String },
}

/// A parsed file: every tensor checked for size against its declared type and shape.
pub struct QSafetensors<'a> {
    pub tensors: BTreeMap<String, StoredTensor<'a>>,
    pub metadata: HashMap<String, String>,
}

impl<'a> QSafetensors<'a> {
    pub fn read(file: &str, bytes: &'a [u8]) -> Result<Self, FormatError> {
        let container = |why: String| FormatError::Container { file: file.to_string(), why };
        if bytes.len() < 8 {
            return Err(container(format!("{} bytes is shorter than the 8-byte header length", bytes.len())));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("checked: 8 bytes"));
        if header_len > (bytes.len() as u64).saturating_sub(8) {
            return Err(container(format!(
                "header claims {header_len} bytes but the file has only {} after the length",
                bytes.len() - 8
            )));
        }
        // The safetensors crate checks JSON, dtype sizes, overflowing shapes and that the
        // offsets tile the data section exactly (no gaps, no overlaps, nothing outside).
        let st = SafeTensors::deserialize(bytes).map_err(|e| container(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| container(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT_TAG) {
            return Err(FormatError::NotQuantizedSafetensors { file: file.to_string() });
        }
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let bad = |why: String| FormatError::Tensor { file: file.to_string(), tensor: name.clone(), why };
            let stored = match view.dtype() {
                Dtype::U8 => {
                    let spec = metadata
                        .get(&format!("ggml.{name}"))
                        .ok_or_else(|| bad("is raw bytes but has no `ggml.<name>` entry naming its block type".into()))?;
                    let (kind, rows, cols) = parse_spec(spec).ok_or_else(|| {
                        bad(format!("has block spec `{spec}`; expected `<type>:<rows>,<cols>` with type one of q8_0, q4_0"))
                    })?;
                    let expected = kind
                        .bytes_for(rows, cols)
                        .ok_or_else(|| bad(format!("shape [{rows}, {cols}] does not fit whole {} blocks", kind.name())))?;
                    if view.data().len() != expected {
                        return Err(bad(format!(
                            "holds {} bytes but {} [{rows}, {cols}] needs {expected}",
                            view.data().len(),
                            kind.name()
                        )));
                    }
                    StoredTensor::Quantized { kind, rows, cols, blocks: view.data() }
                }
                Dtype::F32 => StoredTensor::F32 { shape: view.shape().to_vec(), bytes: view.data() },
                other => return Err(bad(format!("has dtype {other:?}; only U8 blocks and F32 are stored"))),
            };
            tensors.insert(name, stored);
        }
        for key in metadata.keys() {
            if let Some(name) = key.strip_prefix("ggml.") {
                if !tensors.contains_key(name) {
                    return Err(FormatError::Tensor {
                        file: file.to_string(),
                        tensor: name.to_string(),
                        why: "is described in the metadata but missing from the file".into(),
                    });
                }
            }
        }
        Ok(QSafetensors { tensors, metadata })
    }
}

fn parse_spec(spec: &str) -> Option<(GgmlKind, usize, usize)> {
    let (kind, dims) = spec.split_once(':')?;
    let (rows, cols) = dims.split_once(',')?;
    Some((GgmlKind::from_name(kind)?, rows.trim().parse().ok()?, cols.trim().parse().ok()?))
}

/// A tensor to be written: owned bytes plus what the header must say about them.
pub enum TensorToWrite {
    Quantized { kind: GgmlKind, rows: usize, cols: usize, blocks: Vec<u8> },
    F32 { shape: Vec<usize>, values: Vec<f32> },
}

/// Serializes tensors into quantized safetensors bytes. `extra` metadata is kept as is.
pub fn write(tensors: Vec<(String, TensorToWrite)>, extra: HashMap<String, String>) -> Result<Vec<u8>, FormatError> {
    let mut metadata = extra;
    metadata.insert("format".into(), FORMAT_TAG.into());
    let mut owned: Vec<(String, Dtype, Vec<usize>, Cow<[u8]>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        match t {
            TensorToWrite::Quantized { kind, rows, cols, blocks } => {
                let per_row = kind.bytes_for(1, cols).filter(|_| Some(blocks.len()) == kind.bytes_for(rows, cols)).ok_or_else(|| {
                    FormatError::Tensor {
                        file: "(writing)".into(),
                        tensor: name.clone(),
                        why: format!("has {} bytes, which is not {} [{rows}, {cols}]", blocks.len(), kind.name()),
                    }
                })?;
                metadata.insert(format!("ggml.{name}"), format!("{}:{rows},{cols}", kind.name()));
                owned.push((name, Dtype::U8, vec![rows, per_row], Cow::Owned(blocks)));
            }
            TensorToWrite::F32 { shape, values } => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                owned.push((name, Dtype::F32, shape, Cow::Owned(bytes)));
            }
        }
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FormatError::Container { file: "(writing)".into(), why: e.to_string() })?;
    let mut bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| FormatError::Container { file: "(writing)".into(), why: e.to_string() })?;
    canonicalize_header(&mut bytes);
    Ok(bytes)
}

/// Rewrites the JSON header with its keys sorted. The safetensors crate writes `__metadata__` from
/// a HashMap, whose order changes from run to run; sorted, the same model always gives the same
/// bytes (and the same SHA-256 in the manifest). Same keys and values, so the same length.
fn canonicalize_header(bytes: &mut [u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &bytes[8..8 + n];
    let value: serde_json::Value = serde_json::from_slice(header).expect("the safetensors crate wrote valid JSON");
    let sorted = serde_json::to_vec(&value).expect("JSON serializes");
    assert!(sorted.len() <= n, "a reordered header has the same length");
    bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
    bytes[8 + sorted.len()..8 + n].fill(b' ');
}

/// Little-endian f32 bytes → values (the bytes may sit at any alignment).
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("chunks of 4"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let blocks = vec![7u8; GgmlKind::Q8_0.bytes_for(2, 64).unwrap()];
        write(
            vec![
                ("w".into(), TensorToWrite::Quantized { kind: GgmlKind::Q8_0, rows: 2, cols: 64, blocks }),
                ("norm".into(), TensorToWrite::F32 { shape: vec![3], values: vec![1.0, 2.0, 3.0] }),
            ],
            HashMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn written_file_reads_back_with_types_shapes_and_bytes() {
        let bytes = sample();
        let file = QSafetensors::read("t", &bytes).unwrap();
        match &file.tensors["w"] {
            StoredTensor::Quantized { kind, rows, cols, blocks } => {
                assert_eq!((*kind, *rows, *cols, blocks.len()), (GgmlKind::Q8_0, 2, 64, 136));
                assert!(blocks.iter().all(|&b| b == 7));
            }
            other => panic!("{other:?}"),
        }
        match &file.tensors["norm"] {
            StoredTensor::F32 { bytes, .. } => assert_eq!(f32_values(bytes), vec![1.0, 2.0, 3.0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn block_blobs_start_two_byte_aligned_in_the_file() {
        let bytes = sample();
        let file = QSafetensors::read("t", &bytes).unwrap();
        let StoredTensor::Quantized { blocks, .. } = &file.tensors["w"] else { unreachable!() };
        assert_eq!((blocks.as_ptr() as usize - bytes.as_ptr() as usize) % 2, 0);
    }

    #[test]
    fn the_same_tensors_always_give_the_same_bytes() {
        let many = |_| {
            let meta: HashMap<String, String> = (0..20).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
            write(vec![("norm".into(), TensorToWrite::F32 { shape: vec![1], values: vec![1.0] })], meta).unwrap()
        };
        let first = many(0);
        assert!((1..10).all(|i| many(i) == first));
    }

    #[test]
    fn truncated_and_empty_files_are_refused() {
        let bytes = sample();
        for len in [0, 4, 8, 20, bytes.len() - 1] {
            let err = QSafetensors::read("m.safetensors", &bytes[..len]).err().expect("must fail");
            assert!(err.to_string().contains("m.safetensors"), "{err}");
        }
    }

    #[test]
    fn header_length_beyond_the_file_is_refused_without_allocating() {
        let mut bytes = sample();
        bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(QSafetensors::read("m", &bytes), Err(FormatError::Container { .. })));
    }

    #[test]
    fn block_count_that_disagrees_with_the_shape_is_refused() {
        let mut bytes = sample();
        let at = bytes.windows(9).position(|w| w == b"q8_0:2,64").expect("the spec is in the header");
        bytes[at + 5] = b'3';
        let err = QSafetensors::read("m", &bytes).err().expect("must fail").to_string();
        assert!(err.contains("`w`") && err.contains("needs"), "{err}");
    }

    #[test]
    fn plain_safetensors_is_told_apart() {
        let v = [0u8; 4];
        let view = TensorView::new(Dtype::F32, vec![1], &v).unwrap();
        let bytes = safetensors::serialize(vec![("x", view)], None).unwrap();
        assert!(matches!(QSafetensors::read("m", &bytes), Err(FormatError::NotQuantizedSafetensors { .. })));
    }
}
