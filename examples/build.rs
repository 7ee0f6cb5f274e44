//! Generates the `helloworld` types and stubs with the pure-Rust protox compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "helloworld/helloworld.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
