//! sendwerk-proto: the generated tonic/prost code for the public API in `proto/sendwerk/v1`.
//!
//! The code under `src/gen` is committed and never edited by hand; the `codegen_is_fresh` test
//! regenerates it with protox (no `protoc` needed) and fails when the committed copy is stale.
//! Run `SENDWERK_BLESS=1 cargo test -p sendwerk-proto` to rewrite it after changing a `.proto`.

/// `sendwerk.v1`: mailings, recipients and suppressions.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!("gen/sendwerk.v1.rs");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/sendwerk_descriptor.bin");

pub use prost_types;
