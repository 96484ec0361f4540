//! atrest's config parser against the corpus, and the real kube-apiserver against the same
//! corpus: both must accept and refuse the same files.

use atrest_testbed as support;
use atrest_testbed::corpus;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atrest::GroupResource;
use atrest::config::{ConfigError, MatchedBy, parse_str};

fn first_error(err: &ConfigError) -> (String, String) {
    match err {
        ConfigError::Invalid { errors, .. } => (errors[0].field.clone(), errors[0].message.clone()),
        ConfigError::Decode { field, message, .. } => {
            (field.clone().unwrap_or_default(), message.clone())
        }
        other => (String::new(), other.to_string()),
    }
}

#[test]
fn parser_accepts_and_refuses_like_the_apiserver_rules() {
    for c in corpus::cases() {
        let result = parse_str(Path::new("corpus.yaml"), &c.yaml);
        match (&c.error, result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{}: expected valid, got {e}", c.name),
            (Some((field, message)), Ok(_)) => {
                panic!("{}: expected {field}: {message}, got valid", c.name)
            }
            (Some((field, message)), Err(e)) => {
                let (got_field, got_message) = first_error(&e);
                assert_eq!(&got_field, field, "{}: {e}", c.name);
                assert!(
                    got_message.contains(message),
                    "{}: expected {message:?} in {got_message:?}",
                    c.name
                );
                // Errors name the file and never a key.
                let text = e.to_string();
                assert!(text.contains("corpus.yaml"), "{}: {text}", c.name);
                for k in [
                    corpus::K16,
                    corpus::K20,
                    corpus::K24,
                    corpus::K32,
                    "this-is-not-base64-at-all!",
                ] {
                    assert!(!text.contains(k), "{}: error echoes a key: {text}", c.name);
                }
            }
        }
    }
}

#[test]
fn empty_and_wrong_kind_files() {
    let e = parse_str(Path::new("/etc/enc.yaml"), "  \n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "encryption provider configuration file \"/etc/enc.yaml\" is empty"
    );
    let e = parse_str(
        Path::new("x.yaml"),
        "apiVersion: v1\nkind: Pod\nresources: []\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unsupported apiVersion/kind v1/Pod"),
        "{e}"
    );
    let e = parse_str(Path::new("x.yaml"), "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\nresources: []\n").unwrap_err();
    assert!(e.to_string().to_lowercase().contains("duplicate"), "{e}");
}

/// Distinct bytes (no run a message could contain by chance), `len` of them.
fn distinct_material(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(37)))
        .collect()
}

/// Every text form in which key material could leak: base64 (with and without padding, and
/// URL-safe), hex (both cases), and a prefix of each long enough to be unmistakable.
fn leak_forms(material: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    let mut forms = vec![
        STANDARD.encode(material),
        STANDARD_NO_PAD.encode(material),
        URL_SAFE.encode(material),
        hex::encode(material),
        hex::encode_upper(material),
    ];
    let prefixes: Vec<String> = forms.iter().map(|f| f[..12].to_string()).collect();
    forms.extend(prefixes);
    forms
}

#[test]
fn wrong_length_is_refused_without_echoing() {
    use atrest::keys::Key;
    use atrest::model::KeyProvider;
    use zeroize::Zeroizing;
    // Through the key type itself, for each provider and a length it refuses.
    for (provider, len, allowed) in [
        (KeyProvider::Secretbox, 16, "[32]"),
        (KeyProvider::Aescbc, 20, "[16, 24, 32]"),
        (KeyProvider::Aesgcm, 33, "[16, 24, 32]"),
    ] {
        let material = distinct_material(len, 0x41);
        let err = Key::new("k", provider, Zeroizing::new(material.clone())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("got {len}")), "{msg}");
        assert!(msg.contains(allowed), "{msg}");
        for form in leak_forms(&material) {
            assert!(!msg.contains(&form), "{provider}: {msg:?} echoes {form:?}");
        }
        // Debug too: errors end up in logs with {:?}.
        let dbg = format!("{err:?}");
        for form in leak_forms(&material) {
            assert!(!dbg.contains(&form), "{provider}: {dbg:?} echoes {form:?}");
        }
    }
    // Through the config file, as an admin meets it.
    use base64::Engine;
    for (provider, len) in [("secretbox", 16), ("aescbc", 20), ("aesgcm", 33)] {
        let material = distinct_material(len, 0x7b);
        let secret = base64::engine::general_purpose::STANDARD.encode(&material);
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - {provider}: {{keys: [{{name: k, secret: {secret}}}]}}\n"
        );
        let err = parse_str(Path::new("wrong-length.yaml"), &yaml).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("secret is not of the expected length, got {len}")),
            "{provider}: {text}"
        );
        for form in leak_forms(&material) {
            assert!(
                !text.contains(&form),
                "{provider}: {text:?} echoes {form:?}"
            );
            assert!(
                !format!("{err:?}").contains(&form),
                "{provider}: Debug echoes {form:?}"
            );
        }
    }
}

#[test]
fn resolution_follows_exact_then_group_then_all() {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [events]\n  providers: [{{identity: {{}}}}]\n\
         - resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: a, secret: {k}}}]}}}}]\n\
         - resources: [secrets]\n  providers: [{{secretbox: {{keys: [{{name: b, secret: {k}}}]}}}}]\n\
         - resources: ['*.apps']\n  providers: [{{aesgcm: {{keys: [{{name: g, secret: {k}}}]}}}}]\n\
         - resources: ['*.*']\n  providers: [{{secretbox: {{keys: [{{name: all, secret: {k}}}]}}}}]\n",
        k = corpus::K32
    );
    let cfg = parse_str(Path::new("r.yaml"), &yaml).unwrap();
    let r = cfg.resolve(&GroupResource::parse("secrets"));
    assert_eq!(r.matched_by, MatchedBy::Exact);
    assert_eq!(
        r.read_keys(),
        vec!["aescbc:a", "secretbox:b"],
        "two entries concatenate in order"
    );
    assert_eq!(r.write_key(), "aescbc:a");
    let r = cfg.resolve(&GroupResource::parse("deployments.apps"));
    assert_eq!(
        (r.matched_by, r.write_key()),
        (
            MatchedBy::Group,
            "aesgcm:g".parse::<atrest::model::KeyLabel>().unwrap()
        )
    );
    let r = cfg.resolve(&GroupResource::parse("configmaps"));
    assert_eq!(
        (r.matched_by, r.write_key()),
        (
            MatchedBy::All,
            "secretbox:all".parse::<atrest::model::KeyLabel>().unwrap()
        )
    );
    let r = cfg.resolve(&GroupResource::parse("events"));
    assert_eq!(
        (r.write_key(), r.encrypts()),
        (
            "identity".parse::<atrest::model::KeyLabel>().unwrap(),
            false
        )
    );

    let only_cm = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [configmaps]\n  providers: [{{aescbc: {{keys: [{{name: a, secret: {}}}]}}}}]\n",
        corpus::K32
    );
    let cfg = parse_str(Path::new("r.yaml"), &only_cm).unwrap();
    let r = cfg.resolve(&GroupResource::secrets());
    assert_eq!(
        (r.matched_by, r.write_key()),
        (
            MatchedBy::Default,
            "identity".parse::<atrest::model::KeyLabel>().unwrap()
        )
    );
    let lint = atrest::config::lint(&cfg);
    assert!(
        lint.iter().any(|f| f.id == "AR004"),
        "secrets not covered is reported: {lint:?}"
    );
}

/// Starts kube-apiserver with `config` against `etcd` and reports whether it got ready or exited
/// (with its log).
fn apiserver_verdict(
    bins: &Path,
    dir: &Path,
    etcd: &str,
    token: &str,
    config: &str,
    prefix: &str,
) -> Result<(), String> {
    let cfg = dir.join("oracle.yaml");
    support::write_private(&cfg, config.as_bytes());
    let port = support::free_port();
    let log = dir.join("oracle.log");
    let mut child = Command::new(bins.join("kube-apiserver"))
        .args([
            &format!("--etcd-servers={etcd}"),
            // A fresh prefix: each case starts on empty storage.
            &format!("--etcd-prefix={prefix}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={port}"),
            &format!("--cert-dir={}", dir.join("oracle-certs").display()),
            &format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            &format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc",
            &format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC",
            &format!("--encryption-provider-config={}", cfg.display()),
            "--encryption-provider-config-automatic-reload=true",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("oracle.err")).unwrap())
        .spawn()
        .unwrap();
    // Generous: only an apiserver that never gets ready nor exits is a verdict of its own.
    let deadline = Instant::now() + Duration::from_secs(180);
    let verdict = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(dir.join("oracle.err")).unwrap_or_default();
            break Err(format!("exited {status}: {err}"));
        }
        // Ready means every post-start hook ran, the encryption config included.
        let ready = Command::new(bins.join("kubectl"))
            .args([
                &format!("--server=https://127.0.0.1:{port}"),
                &format!("--token={token}"),
                "--insecure-skip-tls-verify",
                "--request-timeout=2s",
                "get",
                "--raw=/readyz",
            ])
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok");
        if ready {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("neither ready nor exited after 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_apiserver_agrees_on_every_case() {
    let cp = support::ControlPlane::start(Default::default()).await;
    let mut disagreements = Vec::new();
    for (i, c) in corpus::cases().into_iter().filter(|c| c.oracle).enumerate() {
        let prefix = format!("/oracle-{i}");
        let verdict = apiserver_verdict(
            &cp.bins,
            cp.path(),
            &cp.etcd_endpoint,
            &cp.admin_token,
            &c.yaml,
            &prefix,
        );
        match (&c.error, verdict) {
            (None, Ok(())) => {}
            (Some((_, message)), Err(log)) => {
                // The apiserver's message carries the same rule text (klog escapes quotes).
                if !log.replace("\\\"", "\"").contains(message) {
                    disagreements.push(format!(
                        "{}: apiserver refused with another message: {log}",
                        c.name
                    ));
                }
            }
            (None, Err(log)) => disagreements.push(format!(
                "{}: atrest accepts, apiserver refuses: {log}",
                c.name
            )),
            (Some(e), Ok(())) => disagreements.push(format!(
                "{}: atrest refuses ({e:?}), apiserver accepts",
                c.name
            )),
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}
