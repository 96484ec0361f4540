// Generates the prost/tonic types of proto/: only what no crate provides (the KMS v2 stored
// object and the KMS v2 plugin API, both package `v2`, and the KMS v1beta1 plugin API).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &[
                "proto/kmsv2/encrypted_object.proto",
                "proto/kmsv2/service.proto",
                "proto/kmsv1/service.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
