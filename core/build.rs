//! Compiles `proto/imlab.proto` with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/imlab.proto");
    let file_descriptors = protox::compile(["imlab.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(file_descriptors)?;
    Ok(())
}
