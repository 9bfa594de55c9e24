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
        // Packet batches: zero-copy slices of tonic's receive buffer.
        .bytes(".pcap.v1.Packets.records")
        .compile_fds(descriptors)?;
    Ok(())
}
