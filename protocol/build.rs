//! Generates the protobuf messages and the async ttrpc client/server for proto/*.proto.

use std::path::Path;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: &[&str] = &["proto/agent.proto"];

fn main() {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(PROTOS)
        .include("proto")
        .rust_protobuf()
        .customize(Customize { async_all: true, ..Default::default() })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating ttrpc code from proto/agent.proto");
    strip_inner_attributes(Path::new(&out_dir));
}

/// The generated files start with `#![...]` attributes and `//!` docs, which `include!` cannot take; the
/// including modules in src/lib.rs carry the equivalent `#[allow]`s instead.
fn strip_inner_attributes(out_dir: &Path) {
    for entry in std::fs::read_dir(out_dir).expect("reading OUT_DIR") {
        let path = entry.expect("reading OUT_DIR").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("reading generated code");
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let l = l.trim_start();
                    !l.starts_with("#![") && !l.starts_with("//!")
                })
                .collect();
            std::fs::write(&path, kept.join("\n")).expect("writing generated code");
        }
    }
}
