//! Generates the prost/tonic code from `proto/ledger/v1/ledger.proto` with a vendored
//! `protoc`, so a clean build needs nothing installed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    println!("cargo:rerun-if-changed=proto/ledger/v1/ledger.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/ledger/v1/ledger.proto"],
        &["proto"],
    )?;
    Ok(())
}
