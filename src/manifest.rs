//! `manifest.json`: every file of a model folder with its size and SHA-256, written by the
//! converter. The browser checks each download against it before caching (www/weights.js); natively
//! `attnscope verify` checks a folder, and loading compares sizes (cheap) so a truncated copy is
//! named before its bytes are parsed.
//!
//! Parsing is strict because the manifest is what every other check trusts: the format tag, 64
//! lowercase hex digits per SHA-256, plain file names (no path separators), and no file listed twice
//! (a JSON map reader would keep the last entry silently, so the names are read with a visitor).

use std::collections::BTreeMap;

pub const MANIFEST_FORMAT: &str = "attnscope-model/1";

/// Manifests are a few hundred bytes; anything far larger is not one.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub size: u64,
    pub sha256: String,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub source: String,
    #[serde(deserialize_with = "unique_files")]
    pub files: BTreeMap<String, ManifestFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: not a valid manifest ({why}). Convert the model again (`./build.sh model` or attnscope-convert).")]
    Invalid { path: String, why: String },
    #[error("{path}: {file} is {actual} bytes but the manifest says {expected}: the file is incomplete or was replaced. Convert or copy the model again.")]
    SizeMismatch { path: String, file: String, expected: u64, actual: u64 },
    #[error("{path}: {file} has SHA-256 {actual} but the manifest says {expected}: the file is damaged or was replaced. Convert or copy the model again.")]
    ChecksumMismatch { path: String, file: String, expected: String, actual: String },
    #[error("{path}: cannot read {file}: {why}. Convert or copy the model again.")]
    Unreadable { path: String, file: String, why: String },
}

fn unique_files<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ManifestFile>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, ManifestFile>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of file entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            use serde::de::Error;
            let mut files = BTreeMap::new();
            while let Some((name, entry)) = map.next_entry::<String, ManifestFile>()? {
                if files.contains_key(&name) {
                    return Err(A::Error::custom(format!("file `{name}` is listed twice")));
                }
                files.insert(name, entry);
            }
            Ok(files)
        }
    }
    d.deserialize_map(Visitor)
}

impl Manifest {
    /// Parses and checks a manifest; `path` names it in errors.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        let invalid = |why: String| ManifestError::Invalid { path: path.to_string(), why };
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(invalid(format!("{} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit", bytes.len())));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(invalid(format!("format is `{}`, expected `{MANIFEST_FORMAT}`", m.format.chars().take(40).collect::<String>())));
        }
        for (name, f) in &m.files {
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(invalid(format!("`{name}` is not a plain file name")));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid(format!("`{name}` has sha256 `{}`, not 64 lowercase hex digits", f.sha256.chars().take(80).collect::<String>())));
            }
        }
        Ok(m)
    }

    /// Checks one file's bytes against its entry.
    pub fn check_bytes(&self, path: &str, file: &str, bytes: &[u8]) -> Result<(), ManifestError> {
        let entry = self.entry(path, file)?;
        if entry.size != bytes.len() as u64 {
            return Err(ManifestError::SizeMismatch { path: path.into(), file: file.into(), expected: entry.size, actual: bytes.len() as u64 });
        }
        use sha2::Digest;
        let actual = hex(&sha2::Sha256::digest(bytes));
        if actual != entry.sha256 {
            return Err(ManifestError::ChecksumMismatch { path: path.into(), file: file.into(), expected: entry.sha256.clone(), actual });
        }
        Ok(())
    }

    fn entry(&self, path: &str, file: &str) -> Result<&ManifestFile, ManifestError> {
        self.files.get(file).ok_or_else(|| ManifestError::Invalid { path: path.into(), why: format!("it does not list {file}") })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `dir/manifest.json`, or None when the folder has none (a hand-made folder).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_folder_manifest(dir: &std::path::Path) -> Result<Option<Manifest>, ManifestError> {
    let path = dir.join("manifest.json");
    let shown = path.display().to_string();
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ManifestError::Unreadable { path: shown, file: "manifest.json".into(), why: e.to_string() }),
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES as u64 => {
            return Err(ManifestError::Invalid { path: shown, why: format!("{} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit", meta.len()) });
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(&path).map_err(|e| ManifestError::Unreadable { path: shown.clone(), file: "manifest.json".into(), why: e.to_string() })?;
    Manifest::from_json(&shown, &bytes).map(Some)
}

/// Sizes only: what loading checks, without hashing hundreds of megabytes.
#[cfg(not(target_arch = "wasm32"))]
pub fn check_sizes(dir: &std::path::Path, m: &Manifest, files: &[&str]) -> Result<(), ManifestError> {
    let path = dir.join("manifest.json").display().to_string();
    for &file in files {
        let Some(entry) = m.files.get(file) else { continue };
        let actual = std::fs::metadata(dir.join(file))
            .map_err(|e| ManifestError::Unreadable { path: path.clone(), file: file.into(), why: e.to_string() })?
            .len();
        if actual != entry.size {
            return Err(ManifestError::SizeMismatch { path, file: file.into(), expected: entry.size, actual });
        }
    }
    Ok(())
}

/// Every file the manifest lists: size, then SHA-256. Returns the files checked.
#[cfg(not(target_arch = "wasm32"))]
pub fn verify_folder(dir: &std::path::Path) -> Result<Vec<String>, ManifestError> {
    let path = dir.join("manifest.json").display().to_string();
    let m = read_folder_manifest(dir)?.ok_or_else(|| ManifestError::Unreadable { path: path.clone(), file: "manifest.json".into(), why: "no such file".into() })?;
    let names: Vec<&str> = m.files.keys().map(String::as_str).collect();
    check_sizes(dir, &m, &names)?;
    for name in &names {
        let actual = sha256_file(&dir.join(name)).map_err(|e| ManifestError::Unreadable { path: path.clone(), file: name.to_string(), why: e.to_string() })?;
        let expected = &m.files[*name].sha256;
        if &actual != expected {
            return Err(ManifestError::ChecksumMismatch { path, file: name.to_string(), expected: expected.clone(), actual });
        }
    }
    Ok(names.into_iter().map(String::from).collect())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; // of no bytes

    fn json(files: &str) -> Vec<u8> {
        format!(r#"{{"format":"{MANIFEST_FORMAT}","name":"t","source":"s","files":{{{files}}}}}"#).into_bytes()
    }

    #[test]
    fn a_file_listed_twice_is_refused() {
        let twice = json(&format!(r#""a":{{"size":0,"sha256":"{SHA}"}},"a":{{"size":1,"sha256":"{SHA}"}}"#));
        let err = Manifest::from_json("m", &twice).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn bad_checksums_and_path_names_are_refused() {
        assert!(Manifest::from_json("m", &json(r#""a":{"size":0,"sha256":"xyz"}"#)).is_err());
        assert!(Manifest::from_json("m", &json(&format!(r#""../a":{{"size":0,"sha256":"{SHA}"}}"#))).is_err());
        let m = Manifest::from_json("m", &json(&format!(r#""a":{{"size":0,"sha256":"{SHA}"}}"#))).unwrap();
        assert!(m.check_bytes("m", "a", b"").is_ok());
        assert!(matches!(m.check_bytes("m", "a", b"x"), Err(ManifestError::SizeMismatch { .. })));
    }
}
