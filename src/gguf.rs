//! A bounds-checked walk over a GGUF file's header, run before candle's reader sees the bytes.
//!
//! candle's `gguf_file::Content::read` trusts a few numbers it should not: `general.alignment = 0`
//! divides by zero, a tensor whose dimensions overflow `usize` wraps into a small size, array
//! elements are materialised one `Value` (32 bytes) per byte of input, and a repeated key or tensor
//! name silently replaces the first. This walker reads the same layout from a byte slice, allocates
//! nothing in proportion to any count it reads, and refuses all of that with the byte offset and
//! what was found, so the converter only hands candle files whose every length, count and offset
//! has been checked against the file itself.
//!
//! Layout (GGUF v1–v3, little-endian): magic `GGUF`, u32 version, tensor count, metadata count
//! (u32 in v1, u64 after), the metadata (key string, u32 type, value), the tensor infos (name,
//! u32 n_dims, n_dims sizes, u32 GGML type, u64 offset), padding to `general.alignment` (default
//! 32), then the tensor data, each tensor at its offset from there.

use std::collections::HashSet;

/// Caps far above any model this project can run (SmolLM2: 272 tensors, 43 keys, 49,152 tokens).
pub const MAX_TENSORS: u64 = 1 << 16;
pub const MAX_METADATA: u64 = 1 << 16;
pub const MAX_ARRAY_LEN: u64 = 1 << 20;
/// candle holds every array element as a 32-byte `Value`: this bounds all of them together.
pub const MAX_ARRAY_ELEMENTS_TOTAL: u64 = 1 << 22;
pub const MAX_STRING_LEN: u64 = 1 << 24;
const MAX_DEPTH: usize = 4;
const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error)]
#[error("at byte {offset}: {why}")]
pub struct GgufError {
    pub offset: u64,
    pub why: String,
}

/// One tensor as the header describes it, already checked to lie inside the file.
#[derive(Debug, Clone)]
pub struct TensorSpan {
    pub name: String,
    /// GGUF order: innermost first.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Absolute byte range in the file.
    pub start: u64,
    pub len: u64,
}

#[derive(Debug)]
pub struct Summary {
    pub version: u32,
    pub metadata_keys: Vec<String>,
    pub alignment: u64,
    pub data_offset: u64,
    pub tensors: Vec<TensorSpan>,
}

/// (weights per block, bytes per block) of the GGML types candle can read.
pub fn block_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        30 => (1, 2),     // BF16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        _ => return None,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    version: u32,
    array_elements: u64,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, why: impl Into<String>) -> Result<T, GgufError> {
        Err(GgufError { offset: self.at as u64, why: why.into() })
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.at) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return self.err(format!("{what} needs {n} bytes but the file ends {} bytes later (truncated)", self.remaining()));
        }
        let slice = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(slice)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    /// A count or length: u32 in GGUF v1, u64 after.
    fn length(&mut self, what: &str) -> Result<u64, GgufError> {
        if self.version == 1 { self.u32(what).map(u64::from) } else { self.u64(what) }
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], GgufError> {
        let len = self.length(what)?;
        if len > MAX_STRING_LEN {
            return self.err(format!("{what} claims a string of {len} bytes (limit {MAX_STRING_LEN})"));
        }
        self.take(len, what)
    }

    /// Skips one value of `ty`; returns it as an integer when it is one (for `general.alignment`).
    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Result<Option<i128>, GgufError> {
        let fixed = |size: u64| size;
        let int = |b: &[u8], signed: bool| -> i128 {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            if signed && b[b.len() - 1] & 0x80 != 0 {
                buf[b.len()..].fill(0xFF);
            }
            i128::from_le_bytes(buf)
        };
        Ok(match ty {
            0 | 1 => Some(int(self.take(fixed(1), what)?, ty == 1)),
            2 | 3 => Some(int(self.take(fixed(2), what)?, ty == 3)),
            4 | 5 => Some(int(self.take(fixed(4), what)?, ty == 5)),
            10 | 11 => Some(int(self.take(fixed(8), what)?, ty == 11)),
            6 => self.take(4, what).map(|_| None)?,
            12 => self.take(8, what).map(|_| None)?,
            7 => match self.take(1, what)?[0] {
                0 | 1 => None,
                b => return self.err(format!("{what} is a bool with byte {b} (must be 0 or 1)")),
            },
            8 => self.string(what).map(|_| None)?,
            9 => {
                if depth >= MAX_DEPTH {
                    return self.err(format!("{what} nests arrays more than {MAX_DEPTH} deep"));
                }
                let elem = self.u32(what)?;
                let len = self.length(what)?;
                if len > MAX_ARRAY_LEN {
                    return self.err(format!("{what} claims an array of {len} elements (limit {MAX_ARRAY_LEN})"));
                }
                self.array_elements += len;
                if self.array_elements > MAX_ARRAY_ELEMENTS_TOTAL {
                    return self.err(format!("{what}: the arrays hold more than {MAX_ARRAY_ELEMENTS_TOTAL} elements in all"));
                }
                let min = min_size(elem, self.version).ok_or_else(|| GgufError { offset: self.at as u64, why: format!("{what} is an array of unknown type {elem}") })?;
                if len.saturating_mul(min) > self.remaining() {
                    return self.err(format!("{what} claims {len} elements, at least {} bytes, but only {} remain (truncated)", len.saturating_mul(min), self.remaining()));
                }
                for _ in 0..len {
                    self.value(elem, depth + 1, what)?;
                }
                None
            }
            other => return self.err(format!("{what} has unknown value type {other}")),
        })
    }
}

/// The fewest bytes one value of a type can take (arrays and strings: their length prefix).
fn min_size(ty: u32, version: u32) -> Option<u64> {
    let prefix = if version == 1 { 4 } else { 8 };
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4 | 5 | 6 => 4,
        10 | 11 | 12 => 8,
        8 => prefix,
        9 => 4 + prefix,
        _ => return None,
    })
}

/// Walks the whole header and every tensor's extent; Ok means candle's reader will find only
/// lengths, counts and offsets that fit in the file.
pub fn check(bytes: &[u8]) -> Result<Summary, GgufError> {
    let mut r = Reader { bytes, at: 0, version: 3, array_elements: 0 };
    if r.take(4, "the magic number")? != b"GGUF" {
        return Err(GgufError { offset: 0, why: "does not start with `GGUF`: not a GGUF file".into() });
    }
    let version = r.u32("the version")?;
    if !(1..=3).contains(&version) {
        return r.err(format!("GGUF version {version} is not 1, 2 or 3"));
    }
    r.version = version;
    let tensor_count = r.length("the tensor count")?;
    let kv_count = r.length("the metadata count")?;
    if tensor_count > MAX_TENSORS {
        return r.err(format!("claims {tensor_count} tensors (limit {MAX_TENSORS})"));
    }
    if kv_count > MAX_METADATA {
        return r.err(format!("claims {kv_count} metadata entries (limit {MAX_METADATA})"));
    }

    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    let mut alignment = 32u64;
    for i in 0..kv_count {
        let key_at = r.at as u64;
        let key = String::from_utf8_lossy(r.string(&format!("metadata key {i}"))?).into_owned();
        if !seen.insert(key.clone()) {
            return Err(GgufError { offset: key_at, why: format!("metadata key `{key}` appears twice") });
        }
        let ty = r.u32(&format!("the type of `{key}`"))?;
        let value = r.value(ty, 0, &format!("`{key}`"))?;
        if key == "general.alignment" {
            alignment = match value {
                Some(a) if a > 0 && a <= 1 << 16 && (a as u64).is_power_of_two() => a as u64,
                _ => return Err(GgufError { offset: key_at, why: format!("general.alignment must be a power of two between 1 and 65536, found {value:?} (type {ty})") }),
            };
        }
        keys.push(key);
    }

    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        let name_at = r.at as u64;
        let name = String::from_utf8_lossy(r.string(&format!("tensor name {i}"))?).into_owned();
        if !names.insert(name.clone()) {
            return Err(GgufError { offset: name_at, why: format!("tensor `{name}` appears twice") });
        }
        let n_dims = r.u32(&format!("the dimension count of `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return r.err(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(if version == 1 { u64::from(r.u32(&name)?) } else { r.u64(&name)? });
        }
        let ggml_type = r.u32(&format!("the type of `{name}`"))?;
        let offset = r.u64(&format!("the offset of `{name}`"))?;
        let (block, type_size) = block_layout(ggml_type).ok_or_else(|| GgufError { offset: name_at, why: format!("tensor `{name}` has GGML type {ggml_type}, which this converter cannot read") })?;
        let elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        // The u64 product must not overflow, and must fit candle's usize element count (a no-op
        // on the 64-bit hosts the converter runs on; format.rs, which also runs in wasm32, checks
        // its own usize products).
        let len = elements
            .filter(|&n| usize::try_from(n).is_ok())
            .filter(|_| dims[0] % block == 0)
            .and_then(|n| (n / block).checked_mul(type_size))
            .ok_or_else(|| GgufError { offset: name_at, why: format!("tensor `{name}` has dimensions {dims:?}, which overflow or are not whole blocks of {block}") })?;
        if offset % alignment != 0 {
            return Err(GgufError { offset: name_at, why: format!("tensor `{name}` starts at data offset {offset}, not a multiple of the alignment {alignment}") });
        }
        tensors.push(TensorSpan { name, dims, ggml_type, start: offset, len });
    }

    let data_offset = (r.at as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    for t in &mut tensors {
        let start = data_offset.checked_add(t.start);
        match start.and_then(|s| s.checked_add(t.len)) {
            Some(end) if end <= file_len => t.start = start.expect("checked"),
            _ => {
                return Err(GgufError {
                    offset: data_offset,
                    why: format!("tensor `{}` needs {} bytes at data offset {}, past the end of the {file_len}-byte file (truncated)", t.name, t.len, t.start),
                });
            }
        }
    }
    let mut by_start: Vec<&TensorSpan> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.start);
    for w in by_start.windows(2) {
        if w[0].start + w[0].len > w[1].start {
            return Err(GgufError { offset: w[1].start, why: format!("tensors `{}` and `{}` overlap", w[0].name, w[1].name) });
        }
    }
    Ok(Summary { version, metadata_keys: keys, alignment, data_offset, tensors })
}
