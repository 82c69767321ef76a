//! Regenerates the committed tonic/prost code and fails when it differs from what is committed.

use std::path::{Path, PathBuf};

const PROTO_FILES: &[&str] = &[
    "sendwerk/v1/admin.proto",
    "sendwerk/v1/bounce.proto",
    "sendwerk/v1/mailing.proto",
    "sendwerk/v1/suppression.proto",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_into(out_dir: &Path) -> Vec<u8> {
    let proto_root = crate_dir().join("../../proto");
    let file_descriptors = protox::compile(PROTO_FILES, [&proto_root]).expect("protos compile with protox");
    let descriptor_bytes = prost::Message::encode_to_vec(&file_descriptors);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(file_descriptors)
        .expect("tonic-prost-build generates code");
    descriptor_bytes
}

#[test]
fn codegen_is_fresh() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let descriptor_bytes = generate_into(scratch.path());
    let generated = std::fs::read_to_string(scratch.path().join("sendwerk.v1.rs")).expect("generated file");
    let gen_dir = crate_dir().join("src/gen");
    let committed_code_path = gen_dir.join("sendwerk.v1.rs");
    let committed_descriptor_path = gen_dir.join("sendwerk_descriptor.bin");
    if std::env::var_os("SENDWERK_BLESS").is_some() {
        std::fs::write(&committed_code_path, &generated).expect("write generated code");
        std::fs::write(&committed_descriptor_path, &descriptor_bytes).expect("write descriptor");
        return;
    }
    let committed = std::fs::read_to_string(&committed_code_path).unwrap_or_default();
    let committed_descriptor = std::fs::read(&committed_descriptor_path).unwrap_or_default();
    assert!(
        committed == generated && committed_descriptor == descriptor_bytes,
        "services/proto/src/gen is stale: run `SENDWERK_BLESS=1 cargo test -p sendwerk-proto --test codegen` and commit"
    );
}
