//! Generates the prost/tonic types of proto/: only what no crate provides (the KMS v2 stored
//! object and the KMS v2 plugin API, both package `v2`, and the KMS v1beta1 plugin API).
//! Also records the git commit for `atrest --version` (ATREST_GIT_COMMIT; "unknown" outside git).
use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    git_commit();
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

/// `git` in the package folder, trimmed stdout when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The commit (12 hex digits), else "unknown" (a crate tarball, no git). Rebuilt when HEAD or
/// the branch it names moves (not on every edit: uncommitted changes are not marked).
fn git_commit() {
    println!("cargo:rerun-if-env-changed=ATREST_GIT_COMMIT");
    let commit = if let Ok(c) = std::env::var("ATREST_GIT_COMMIT") {
        c
    } else if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        if let Some(f) = git(&["rev-parse", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", absolute(&f).display());
        }
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            for p in [r.as_str(), "packed-refs"] {
                // A path that does not exist would rerun this script on every build.
                if let Some(f) = git(&["rev-parse", "--git-path", p]).map(|f| absolute(&f))
                    && f.exists()
                {
                    println!("cargo:rerun-if-changed={}", f.display());
                }
            }
        }
        c
    } else {
        "unknown".to_string()
    };
    println!("cargo:rustc-env=ATREST_GIT_COMMIT={commit}");
}

/// git prints paths relative to the folder it ran in.
fn absolute(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
    }
}
