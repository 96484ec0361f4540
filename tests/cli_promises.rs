//! README promises about the command line that no other test holds it to: `atrest config check`
//! and its exit codes under `--fail-on`, `atrest keys generate`, and exit 2 when the apiserver
//! cannot be reached.

use atrest_testbed as support;
use support::b64;

use std::path::{Path, PathBuf};

use atrest::GroupResource;
use atrest::config::Provider;
use base64::Engine;
use serde_json::Value;
use support::{ControlPlane, Options, create_secrets, random_key_b64, write_private};

/// secrets with one provider block (`providers:` items) and nothing else.
fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
    )
}

/// Writes `yaml` (mode 0600) into a fresh folder; returns the folder guard and the file.
fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.yaml");
    write_private(&path, yaml.as_bytes());
    (dir, path)
}

/// `atrest config check --config F [--fail-on L] -o json`: (exit code, JSON, stderr).
fn check(path: &Path, fail_on: Option<&str>) -> (i32, Value, String) {
    let mut args = vec![
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "-o",
        "json",
    ];
    if let Some(l) = fail_on {
        args.extend(["--fail-on", l]);
    }
    let (code, stdout, stderr) = support::atrest(&args, &[]);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (code, doc, stderr)
}

fn finding_ids(doc: &Value) -> Vec<(String, String)> {
    doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings list: {doc:#}"))
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A config file, its name, the findings (id, severity) it must get, and the exit codes for
/// `--fail-on` info, warning and error.
type Case<'a> = (&'a Path, &'a str, Vec<(&'a str, &'a str)>, [i32; 3]);

#[test]
fn config_check_exit_code_follows_fail_on() {
    // Clean: secretbox first, identity to read old plaintext. No finding at any level.
    let (_d, clean) = config_file(&config(&format!(
        "  - secretbox: {{keys: [{{name: s, secret: {}}}]}}\n  - identity: {{}}\n",
        b64(32, 1)
    )));
    // An info finding only: aesgcm (AR003).
    let (_d2, info) = config_file(&config(&format!(
        "  - aesgcm: {{keys: [{{name: g, secret: {}}}]}}\n",
        b64(32, 2)
    )));
    // A warning finding only: aescbc (AR002).
    let (_d3, warning) = config_file(&config(&format!(
        "  - aescbc: {{keys: [{{name: c, secret: {}}}]}}\n",
        b64(32, 3)
    )));
    // An error finding: identity first for secrets (AR001).
    let (_d4, error) = config_file(&config(&format!(
        "  - identity: {{}}\n  - secretbox: {{keys: [{{name: s, secret: {}}}]}}\n",
        b64(32, 4)
    )));
    let cases: [Case; 4] = [
        // exit codes for --fail-on info, warning, error (the default)
        (&clean, "clean", vec![], [0, 0, 0]),
        (&info, "info", vec![("AR003", "info")], [1, 0, 0]),
        (&warning, "warning", vec![("AR002", "warning")], [1, 1, 0]),
        (&error, "error", vec![("AR001", "error")], [1, 1, 1]),
    ];
    for (path, name, want_findings, codes) in cases {
        for (level, want) in ["info", "warning", "error"].into_iter().zip(codes) {
            let (code, doc, stderr) = check(path, Some(level));
            assert_eq!(code, want, "{name} --fail-on {level}: {doc:#}\n{stderr}");
            assert_eq!(doc["valid"], true, "{name}");
            let want_findings: Vec<(String, String)> = want_findings
                .iter()
                .map(|(i, s)| (i.to_string(), s.to_string()))
                .collect();
            assert_eq!(finding_ids(&doc), want_findings, "{name}");
        }
        // No --fail-on: the default is error.
        let (code, _, _) = check(path, None);
        assert_eq!(code, codes[2], "{name} with the default --fail-on");
    }

    // The file's own mode is linted: readable by others is an error (AR006).
    let (_d5, open) = config_file(&config(&format!(
        "  - secretbox: {{keys: [{{name: s, secret: {}}}]}}\n",
        b64(32, 5)
    )));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, doc, _) = check(&open, None);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(
        finding_ids(&doc),
        vec![("AR006".to_string(), "error".to_string())]
    );
}

#[test]
fn config_check_refuses_an_invalid_or_missing_file_with_exit_2() {
    // A wrong-length key: invalid, exit 2 whatever --fail-on says, and the key is not echoed.
    let secret = b64(20, 0x5c);
    let (_d, bad) = config_file(&config(&format!(
        "  - secretbox: {{keys: [{{name: s, secret: {secret}}}]}}\n"
    )));
    for level in ["info", "warning", "error"] {
        let (code, doc, stderr) = check(&bad, Some(level));
        assert_eq!(code, 2, "--fail-on {level}: {doc:#}\n{stderr}");
        assert_eq!(doc["valid"], false);
        let text = doc.to_string();
        assert!(
            text.contains("secret is not of the expected length, got 20"),
            "{text}"
        );
        assert!(
            !text.contains(&secret) && !stderr.contains(&secret),
            "{text}"
        );
    }
    // The table output says it on stderr.
    let (code, stdout, stderr) =
        support::atrest(&["config", "check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("expected length"), "{stderr}");
    assert!(!stderr.contains(&secret) && !stdout.contains(&secret));

    let missing = bad.with_file_name("missing.yaml");
    let (code, _, stderr) = support::atrest(
        &["config", "check", "--config", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

/// `atrest keys generate <args>`: the printed entry's comment line, name and secret.
fn generate(args: &[&str]) -> (String, String, String, String) {
    let mut all = vec!["keys", "generate"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = support::atrest(&all, &[]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a comment and a two-line entry: {stdout}");
    let name = lines[1]
        .strip_prefix("- name: ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let secret = lines[2]
        .strip_prefix("  secret: ")
        .unwrap_or_else(|| panic!("{stdout}"));
    (
        stdout.clone(),
        lines[0].to_string(),
        name.to_string(),
        secret.to_string(),
    )
}

#[test]
fn keys_generate_prints_a_key_entry_the_config_accepts() {
    for (provider, flag) in [
        (atrest::model::KeyProvider::Aescbc, "aescbc"),
        (atrest::model::KeyProvider::Aesgcm, "aesgcm"),
        (atrest::model::KeyProvider::Secretbox, "secretbox"),
    ] {
        let (out, comment, name, secret) = generate(&["--provider", flag, "--name", "new:key"]);
        let (_, _, _, secret2) = generate(&["--provider", flag, "--name", "new:key"]);
        assert_ne!(secret, secret2, "{flag}: two runs print the same key");
        assert_eq!(name, "\"new:key\"", "{flag}");

        // The key: standard base64 of 32 random bytes (AES-256, the only secretbox size).
        let material = base64::engine::general_purpose::STANDARD
            .decode(&secret)
            .unwrap_or_else(|e| panic!("{flag}: {secret:?} is not base64: {e}"));
        assert_eq!(material.len(), 32, "{flag}");
        assert!(provider.allowed_lengths().contains(&material.len()));
        assert!(
            comment.starts_with('#')
                && comment.contains(&format!("{flag} key new:key"))
                && comment.contains(&atrest::keys::fingerprint(&material)),
            "{flag}: {comment}"
        );

        // The output pasted as is under `<provider>.keys` is a config the parser accepts, with
        // that key first.
        let indented: String = out.lines().map(|l| format!("          {l}\n")).collect();
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - {flag}:\n          keys:\n{indented}"
        );
        let cfg = atrest::config::parse_str(Path::new("generated.yaml"), &yaml)
            .unwrap_or_else(|e| panic!("{flag}: {e}\n{yaml}"));
        let r = cfg.resolve(&GroupResource::secrets());
        assert_eq!(r.write_key().to_string(), format!("{flag}:new:key"));
        match &r.entries[0].provider {
            Provider::Keys { provider: p, keys } => {
                assert_eq!(*p, provider);
                assert_eq!(keys[0].fingerprint(), atrest::keys::fingerprint(&material));
            }
            other => panic!("{flag}: {other:?}"),
        }
    }

    // Defaults: secretbox, and a key-<UTC timestamp> name.
    let (_, comment, name, secret) = generate(&[]);
    assert!(comment.contains("secretbox key key-"), "{comment}");
    assert!(
        name.starts_with("\"key-")
            && name.ends_with("Z\"")
            && name.len() == "\"key-20260101T000000Z\"".len(),
        "{name}"
    );
    let material = base64::engine::general_purpose::STANDARD
        .decode(&secret)
        .unwrap();
    assert_eq!(material.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_apiserver_exits_2() {
    let cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_secrets(&client, "default", &["plain".into()], "v").await;
    // The file now wants aescbc: the plaintext secret is a target, so reencrypt needs the API.
    cp.write_config(&support::secrets_config(
        &(support::aescbc_block(&[("key1", &random_key_b64())]) + "      - identity: {}\n"),
    ));
    // A kubeconfig whose server is a port nothing listens on.
    let dead = format!("https://127.0.0.1:{}", support::free_port());
    let text = std::fs::read_to_string(&cp.kubeconfig)
        .unwrap()
        .replace(cp.url(), &dead);
    assert!(text.contains(&dead));
    let kubeconfig = cp.path().join("dead.kubeconfig");
    write_private(&kubeconfig, text.as_bytes());
    let (_, rev_before) = cp.raw("/registry/secrets/default/plain").await.unwrap();

    let flags = cp.atrest_flags();
    let mut args = vec![
        "reencrypt",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--state-dir",
        cp.path().join("state").to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = support::atrest(&args, &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("error: request to the apiserver at {dead} failed")),
        "names what it could not reach: {stderr}"
    );
    let (value, rev_after) = cp.raw("/registry/secrets/default/plain").await.unwrap();
    assert_eq!(rev_after, rev_before, "nothing was written");
    assert!(value.starts_with(b"k8s\x00"));
}
