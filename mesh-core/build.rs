//! Generates the `mesh.control.v1` types and gRPC stubs with the pure-Rust protox compiler, so
//! no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "mesh/control/v1/control.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // The transport-specific `connect` helper is not generated: callers bring their own
        // channel (the mesh's mTLS connector), which keeps tonic's transport out of this crate.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
