//! Every input under `fuzz/regressions/<target>/` replayed on stable Rust, through the same code
//! the cargo-fuzz target runs (its source files are included here), so that `cargo test` fails
//! when a fixed finding comes back — not only a nightly `cargo fuzz run`.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;
#[path = "../fuzz/fuzz_targets/config_props.rs"]
mod config_props;
#[path = "../fuzz/fuzz_targets/db_props.rs"]
mod db_props;

use std::path::{Path, PathBuf};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions")
}

/// The files of one target's regression folder, sorted, with their contents.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = regressions_dir().join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_regression_input_of_every_target_is_replayed() {
    assert!(
        std::env::var_os("ATREST_FUZZ_SKIP_KNOWN").is_none(),
        "ATREST_FUZZ_SKIP_KNOWN would skip the very echoes these inputs prove fixed: unset it"
    );
    let mut replayed = 0;
    let mut targets: Vec<String> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert!(!targets.is_empty(), "no fuzz/regressions/<target> folder");
    for target in &targets {
        let files = inputs(target);
        assert!(!files.is_empty(), "fuzz/regressions/{target} is empty");
        for (name, data) in files {
            match target.as_str() {
                "config_parse" => replay_config_parse(&name, &data),
                "classify" => common::classify_all(&common::table(), &data),
                "db_file" => db_props::check(&data),
                other => panic!(
                    "fuzz/regressions/{other}/{name}: no replay for fuzz target {other:?}; add it here"
                ),
            }
            replayed += 1;
        }
    }
    // Every file counted: the 7 config_parse findings of fuzz/README.md at least.
    assert!(replayed >= 7, "only {replayed} regression inputs found");
}

/// The fuzz target's check, plus what makes the replay meaningful for these inputs: each is a
/// config that is refused, with a `secret:` value the echo check looks for.
fn replay_config_parse(name: &str, data: &[u8]) {
    let text = std::str::from_utf8(data)
        .unwrap_or_else(|_| panic!("{name}: the echo check needs UTF-8 input"));
    let secrets = config_props::secret_values(text);
    assert!(
        !secrets.is_empty(),
        "{name}: no `secret:` value for the echo check to look for"
    );
    let err = atrest::config::parse_bytes(Path::new("fuzz-config.yaml"), data)
        .expect_err("every regression input is a config the parser refuses");
    for s in &secrets {
        assert!(
            !err.to_string().contains(s),
            "{name}: the error echoes {s:?}: {err}"
        );
    }
    // The target's own property check (panics on an echo or a render round-trip failure).
    config_props::check(data);
}

#[test]
fn the_echo_check_catches_an_echo() {
    // The replay above can only fail if the shared check does detect an echoed secret.
    let text = "kind: x\nsecret: c2VjcmV0c2VjcmV0c2VjcmV0\n";
    let caught = std::panic::catch_unwind(|| {
        config_props::check_no_secret_echo(text, "unknown field: c2VjcmV0c2VjcmV0c2VjcmV0")
    });
    assert!(caught.is_err(), "an error quoting the secret must fail");
    config_props::check_no_secret_echo(text, "unknown field: kind");
}
