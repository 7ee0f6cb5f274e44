//! Generates the fan-out baseline's protocol (`proto/fanout.proto`) with the pure-Rust protox
//! compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["fanout.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
