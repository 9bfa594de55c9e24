//! Compiles `proto/pcap/v1/pcap.proto` with protox (pure Rust, no protoc).

fn main() -> anyhow::Result<()> {
    let files = ["proto/pcap/v1/pcap.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // A map: boxed, so that start requests stay small in their enums.
        .boxed(".pcap.v1.CaptureOptions.c2c")
        .compile_fds(descriptors)?;
    Ok(())
}
