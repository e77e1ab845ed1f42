//! The GGUF export (src/export.rs), as the bench's peer needs it: llama.cpp must run exactly the
//! blocks attnscope runs, under its own tensor names, with the source's tokenizer.

mod common;

use std::path::Path;

use attnscope::convert::{import_gguf, import_gguf_bytes, write_folder};
use attnscope::export::export_gguf;
use attnscope::format::{GgmlKind, QSafetensors, StoredTensor};
use candle_core::quantized::gguf_file;
use common::*;

/// The tiny GGUF, converted into a folder beside it.
fn converted(tag: &str) -> (Folder, std::path::PathBuf) {
    let f = Folder::new(tag);
    let source = f.path().join("tiny.gguf");
    std::fs::write(&source, gguf()).unwrap();
    let imported = import_gguf(&source).unwrap();
    write_folder(&imported, &f.path().join("model"), "tiny", &GgmlKind::ALL).unwrap();
    (f, source)
}

#[test]
fn the_export_holds_the_folders_blocks_byte_for_byte_under_llama_cpp_names() {
    let (f, source) = converted("export");
    let source_content = gguf_file::Content::read(&mut std::io::Cursor::new(gguf())).unwrap();
    for kind in GgmlKind::ALL {
        let out = f.path().join(format!("tiny.{}.gguf", kind.name()));
        export_gguf(&f.path().join("model"), kind, &source, &out).unwrap();
        assert!(!out.with_extension("gguf.partial").exists(), "no partial file is left behind");

        let bytes = std::fs::read(&out).unwrap();
        let mut reader = std::io::Cursor::new(&bytes);
        let content = gguf_file::Content::read(&mut reader).unwrap();
        let weights = std::fs::read(f.path().join(format!("model/model.{}.safetensors", kind.name()))).unwrap();
        let folder = QSafetensors::read("weights", &weights).unwrap();
        assert_eq!(content.tensor_infos.len(), folder.tensors.len());
        for (name, stored) in &folder.tensors {
            let gguf = gguf_name(name); // the tests' own mapping (tests/common)
            let exported = content.tensor(&mut reader, &gguf, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{gguf}: {e}"));
            let (expected, dims) = match stored {
                StoredTensor::Quantized { kind: k, rows, cols, blocks } => {
                    assert_eq!(exported.dtype(), k.candle(), "{gguf}");
                    (*blocks, vec![*rows, *cols])
                }
                StoredTensor::F32 { shape, bytes } => (*bytes, shape.clone()),
            };
            assert_eq!(exported.shape().dims(), dims, "{gguf}");
            assert_eq!(&exported.data().unwrap()[..], expected, "{gguf}: the blocks differ");
        }
        // The source's metadata, with the file type of what the blocks now are (and the alignment
        // candle writes, which the tiny source has too).
        assert_eq!(content.metadata["general.alignment"].to_u32().unwrap(), 32);
        for (key, value) in &source_content.metadata {
            if key != "general.file_type" {
                assert_eq!(format!("{:?}", content.metadata[key]), format!("{value:?}"), "{key}");
            }
        }
        let file_type = content.metadata["general.file_type"].to_u32().unwrap();
        assert_eq!(file_type, if kind == GgmlKind::Q8_0 { 7 } else { 2 });

        // Imported again, it gives the folder it came from: the same config, tokenizer and blocks.
        let again = f.path().join(format!("again-{}", kind.name()));
        write_folder(&import_gguf_bytes(&out, &bytes).unwrap(), &again, "tiny", &[kind]).unwrap();
        for file in ["config.json", "tokenizer.json"] {
            assert_eq!(std::fs::read(again.join(file)).unwrap(), std::fs::read(f.path().join("model").join(file)).unwrap(), "{file}");
        }
    }
}

#[test]
fn an_export_is_refused_with_a_gguf_the_folder_was_not_converted_from() {
    let (f, _) = converted("export-other");
    let mut other = gguf();
    let n = other.len();
    other[n - 1] ^= 1; // one byte changed: another file
    let other_path = f.path().join("other.gguf");
    std::fs::write(&other_path, other).unwrap();
    let out = f.path().join("out.gguf");
    let err = export_gguf(&f.path().join("model"), GgmlKind::Q8_0, &other_path, &out).unwrap_err().to_string();
    assert!(err.contains("is not the file") && err.contains("tiny.gguf"), "{err}");
    assert!(!out.exists() && !Path::new(&out.with_extension("gguf.partial")).exists());
}
