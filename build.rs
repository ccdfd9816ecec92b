//! Generates the gRPC code from `proto/kawa.proto`.
//! No `protoc` is installed on build machines, so the vendored binary is used.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/kawa.proto");
    tonic_prost_build::configure()
        // Frames cross the wire as `Bytes`: no copy between the socket and FFmpeg.
        .bytes(".kawa.v1.MediaFrame.data")
        .bytes(".kawa.v1.OpusUnit.data")
        .compile_protos(&["proto/kawa.proto"], &["proto"])?;
    Ok(())
}
