// Generates the prost types of proto/: only what no crate provides (the KMS v2 stored object).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .compile_protos(&["proto/kmsv2/encrypted_object.proto"], &["proto"])?;
    Ok(())
}
