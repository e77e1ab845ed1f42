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

use safetensors::tensor::{Dtype, TensorView};

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

/// Headers longer than this are refused before they are parsed. SmolLM2-135M's is about 40 KB and
/// a 70B Llama's about 100 KB; the cap keeps a hostile length from costing memory or parse time
/// (the safetensors crate's own cap is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 8 << 20;

/// A parsed file: every tensor checked for size against its declared type and shape.
pub struct QSafetensors<'a> {
    pub tensors: BTreeMap<String, StoredTensor<'a>>,
    pub metadata: HashMap<String, String>,
}

impl<'a> QSafetensors<'a> {
    /// Checks, in order: the 8-byte length, the header's length (within the file and under
    /// `MAX_HEADER_BYTES`), its JSON (no name twice: a JSON map reader would silently keep the
    /// last), each tensor's dtype and shape (products in u64 with overflow checks, so a shape that
    /// overflows 32 or 64 bits is refused on every platform), that the offsets tile the data
    /// section exactly, and that every `U8` tensor's bytes are whole GGML blocks of its logical
    /// shape. Nothing is allocated in proportion to a number read from the file.
    pub fn read(file: &str, bytes: &'a [u8]) -> Result<Self, FormatError> {
        let container = |why: String| FormatError::Container { file: file.to_string(), why };
        let tensor_err = |tensor: &str, why: String| FormatError::Tensor { file: file.to_string(), tensor: tensor.to_string(), why };
        if bytes.len() < 8 {
            return Err(container(format!("{} bytes is shorter than the 8-byte header length", bytes.len())));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("checked: 8 bytes"));
        let after_len = bytes.len() as u64 - 8;
        if header_len > after_len {
            return Err(container(format!("header claims {header_len} bytes but the file has only {after_len} after the length")));
        }
        if header_len > MAX_HEADER_BYTES {
            return Err(container(format!("header claims {header_len} bytes, more than the {MAX_HEADER_BYTES}-byte limit for a model header")));
        }
        let header_end = 8 + header_len as usize; // ≤ bytes.len(), checked above
        let header: Header = serde_json::from_slice(&bytes[8..header_end]).map_err(|e| container(format!("header is not valid JSON: {e}")))?;
        if let Some(name) = header.duplicate_tensor {
            return Err(tensor_err(&name, "appears twice in the header".into()));
        }
        if let Some(key) = header.metadata.duplicate {
            return Err(container(format!("metadata key `{key}` appears twice in the header")));
        }
        let metadata: HashMap<String, String> = header.metadata.entries.into_iter().collect();
        if metadata.get("format").map(String::as_str) != Some(FORMAT_TAG) {
            return Err(FormatError::NotQuantizedSafetensors { file: file.to_string() });
        }

        // Offsets: sorted by start, each tensor must begin where the previous one ended, the first
        // at 0, the last end exactly at the end of the file.
        let data = &bytes[header_end..];
        let data_len = data.len() as u64;
        let mut order: Vec<&(String, RawTensorInfo)> = header.tensors.iter().collect();
        order.sort_by_key(|(_, t)| t.data_offsets);
        let mut end_so_far = 0u64;
        let mut previous: Option<&str> = None;
        for (name, t) in &order {
            let (start, end) = t.data_offsets;
            if end < start {
                return Err(tensor_err(name, format!("has data_offsets [{start}, {end}], which end before they start")));
            }
            if end > data_len {
                return Err(tensor_err(name, format!("has data_offsets [{start}, {end}] but the data section is only {data_len} bytes (the file is truncated)")));
            }
            if start > end_so_far {
                let after = previous.map_or("the start of the data".to_string(), |p| format!("`{p}`"));
                return Err(tensor_err(name, format!("starts at byte {start}, leaving a gap of {} bytes after {after}", start - end_so_far)));
            }
            if start < end_so_far {
                let p = previous.expect("end_so_far > 0 only after a tensor");
                return Err(tensor_err(name, format!("starts at byte {start}, inside `{p}` (which ends at {end_so_far}): the tensors overlap")));
            }
            end_so_far = end;
            previous = Some(name);
        }
        if end_so_far != data_len {
            return Err(container(format!("{} bytes of data follow the last tensor; no tensor describes them", data_len - end_so_far)));
        }

        let mut tensors = BTreeMap::new();
        for (name, t) in header.tensors {
            let bad = |why: String| tensor_err(&name, why);
            let elements = t.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
            let (start, end) = (t.data_offsets.0 as usize, t.data_offsets.1 as usize); // ≤ data_len, checked above
            let view = &data[start..end];
            let shape_usize = || -> Option<Vec<usize>> { t.shape.iter().map(|&d| usize::try_from(d).ok()).collect() };
            let size_of = |elem_bytes: u64| -> Result<u64, FormatError> {
                elements
                    .and_then(|n| n.checked_mul(elem_bytes))
                    .ok_or_else(|| bad(format!("has shape {:?}, whose size overflows 64 bits", t.shape)))
            };
            let ggml_entry = metadata.get(&format!("ggml.{name}"));
            let stored = match t.dtype.as_str() {
                "U8" => {
                    let needed = size_of(1)?;
                    if needed != view.len() as u64 {
                        return Err(bad(format!("has shape {:?} ({needed} bytes) but data_offsets span {} bytes", t.shape, view.len())));
                    }
                    let spec = ggml_entry.ok_or_else(|| bad("is raw bytes but has no `ggml.<name>` entry naming its block type".into()))?;
                    let (kind, rows, cols) = parse_spec(spec).ok_or_else(|| {
                        bad(format!("has block spec `{spec}`; expected `<type>:<rows>,<cols>` with type one of q8_0, q4_0 and sizes that fit in memory"))
                    })?;
                    let expected = kind
                        .bytes_for(rows, cols)
                        .ok_or_else(|| bad(format!("shape [{rows}, {cols}] is not whole {} blocks of 32, or its size overflows", kind.name())))?;
                    if view.len() != expected {
                        return Err(bad(format!("holds {} bytes but {} [{rows}, {cols}] needs {expected}", view.len(), kind.name())));
                    }
                    let per_row = kind.bytes_for(1, cols).expect("cols checked: whole blocks");
                    if t.shape != [rows as u64, per_row as u64] {
                        return Err(bad(format!("has shape {:?}; {} [{rows}, {cols}] is stored as [{rows}, {per_row}]", t.shape, kind.name())));
                    }
                    StoredTensor::Quantized { kind, rows, cols, blocks: view }
                }
                "F32" => {
                    let needed = size_of(4)?;
                    if needed != view.len() as u64 {
                        return Err(bad(format!("has shape {:?} ({needed} bytes as F32) but data_offsets span {} bytes", t.shape, view.len())));
                    }
                    if ggml_entry.is_some() {
                        return Err(bad("is F32 but also has a `ggml.` block spec".into()));
                    }
                    let shape = shape_usize().ok_or_else(|| bad(format!("has shape {:?}, too large for this platform", t.shape)))?;
                    StoredTensor::F32 { shape, bytes: view }
                }
                other if KNOWN_DTYPES.contains(&other) => {
                    return Err(bad(format!("has dtype {other}; only U8 (GGML blocks) and F32 are stored in this format")));
                }
                other => return Err(bad(format!("has unknown dtype `{}`", other.chars().take(32).collect::<String>()))),
            };
            tensors.insert(name, stored);
        }
        for key in metadata.keys() {
            if let Some(name) = key.strip_prefix("ggml.") {
                if !tensors.contains_key(name) {
                    return Err(tensor_err(name, "is described in the metadata but missing from the file".into()));
                }
            }
        }
        Ok(QSafetensors { tensors, metadata })
    }
}

/// The dtype names safetensors defines: one of these that is not U8 or F32 is "unsupported",
/// anything else "unknown".
const KNOWN_DTYPES: [&str; 20] = [
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32",
    "F32", "C64", "F64", "I64", "U64",
];

/// One tensor entry as written in the header, before any check.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The JSON header, read with a visitor that notices a name written twice (serde_json's maps,
/// and so the safetensors crate, silently keep the last value of a repeated key).
struct Header {
    metadata: UniqueStrings,
    tensors: Vec<(String, RawTensorInfo)>,
    duplicate_tensor: Option<String>,
}

#[derive(Default)]
struct UniqueStrings {
    entries: Vec<(String, String)>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Header;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                use serde::de::Error;
                let mut header = Header { metadata: UniqueStrings::default(), tensors: Vec::new(), duplicate_tensor: None };
                let mut seen = std::collections::HashSet::new();
                let mut seen_metadata = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        let mut metadata: UniqueStrings = map.next_value()?;
                        if seen_metadata {
                            metadata.duplicate.get_or_insert_with(|| "__metadata__".into());
                        }
                        seen_metadata = true;
                        header.metadata = metadata;
                        continue;
                    }
                    let info: RawTensorInfo = map.next_value().map_err(|e| A::Error::custom(format!("tensor `{key}`: {e}")))?;
                    if !seen.insert(key.clone()) {
                        header.duplicate_tensor.get_or_insert(key.clone());
                    }
                    header.tensors.push((key, info));
                }
                Ok(header)
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl<'de> serde::Deserialize<'de> for UniqueStrings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueStrings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`__metadata__` as an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueStrings, A::Error> {
                let mut out = UniqueStrings::default();
                let mut seen = std::collections::HashSet::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if !seen.insert(key.clone()) {
                        out.duplicate.get_or_insert(key.clone());
                    }
                    out.entries.push((key, value));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// `"<type>:<rows>,<cols>"` → kind and sizes; None for an unknown type or a size that does not
/// fit in `usize` (32 bits on wasm32).
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
