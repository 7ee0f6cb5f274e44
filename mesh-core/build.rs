//! Generates the `mesh.control.v1` types and gRPC stubs with the pure-Rust protox compiler, so
//! no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "mesh/control/v1/control.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // The service stubs only with the `grpc` feature: the model builds without them.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        // The transport-specific `connect` helper is not generated: callers bring their own
        // channel (the mesh's mTLS connector), which keeps tonic's transport out of this crate.
        .build_transport(false)
        // Prost's codec, except that a request the server cannot decode is INVALID_ARGUMENT
        // (the caller's fault), not INTERNAL: see `proto::codec`.
        .codec_path("crate::proto::codec::Codec")
        .compile_fds(descriptors)?;
    Ok(())
}
