// Generates the prost/tonic types of proto/: only what no crate provides (the KMS v2 stored
// object and the KMS v2 plugin API; both are package `v2`, so they land in one module).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &[
                "proto/kmsv2/encrypted_object.proto",
                "proto/kmsv2/service.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
