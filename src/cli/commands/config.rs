//! `atrest config check` and `atrest keys generate`: no cluster needed.

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::render::{self, config as view};
use crate::cli::{EXIT_FAILED, EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::settings::resolve;
use atrest::cluster::{ClusterError, load_config};
use atrest::config;
use atrest::keys::signing::SigningKey;
use atrest::keys::{Key, new_key_name};
use atrest::model::KeyProvider;

/// Validates, lints and summarises the config; exit 1 when a finding reaches `--fail-on`.
pub(crate) fn check(a: args::ConfigCheckArgs) -> Result<i32> {
    let s = resolve(&super::flags(&a.source, None, None))?;
    let path = s.config.as_ref().map(|c| c.value.clone());
    let loaded = match load_config(&s) {
        Ok(l) => l,
        Err(e) => {
            let e = anyhow::Error::from(e);
            match (a.output, e.downcast_ref::<ClusterError>()) {
                (
                    Output::Json,
                    Some(ClusterError::Config(config::ConfigError::Invalid { path, errors })),
                ) => {
                    render::print_json(&serde_json::json!({
                        "file": path, "valid": false, "errors": errors,
                    }));
                }
                (Output::Json, _) => {
                    render::print_json(&serde_json::json!({
                        "file": path, "valid": false, "errors": [{"field": "", "message": format!("{e:#}")}],
                    }));
                }
                _ => eprintln!("error: {}", crate::cli::with_hint(&e)),
            }
            return Ok(EXIT_FAILED);
        }
    };
    let mut findings = config::lint(&loaded.config);
    findings.extend(config::lint_file_mode(loaded.file.mode));
    match a.output {
        Output::Json => render::print_json(&view::config_json(&loaded, &findings)),
        Output::Table => crate::cli::out!("{}", view::config_table(&loaded, &findings)),
    }
    Ok(if findings.iter().any(|f| f.severity >= a.fail_on) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

/// Prints one new key entry: the only output of atrest that holds key material.
pub(crate) fn generate_key(a: args::KeysGenerateArgs) -> Result<i32> {
    let provider = match a.provider {
        args::KeyProviderArg::Aescbc => KeyProvider::Aescbc,
        args::KeyProviderArg::Aesgcm => KeyProvider::Aesgcm,
        args::KeyProviderArg::Secretbox => KeyProvider::Secretbox,
    };
    let name = a.name.unwrap_or_else(|| new_key_name(chrono::Utc::now()));
    let key = Key::generate(name, provider)?;
    let secret = key.secret_base64();
    crate::cli::outln!(
        "# {} key {} ({}): add under {}.keys; first key = write key\n- name: {}\n  secret: {}",
        provider,
        key.name(),
        key.fingerprint(),
        provider,
        serde_json::to_string(key.name())?,
        secret.as_str()
    );
    Ok(EXIT_OK)
}

/// `atrest keys signing-key --out FILE`: writes the private key, prints the public one.
pub(crate) fn signing_key(a: args::KeysSigningKeyArgs) -> Result<i32> {
    let key = SigningKey::generate()?;
    key.write_new(&a.out)?;
    let public = key.public();
    eprintln!(
        "atrest: signing key {} written to {} (0600); its public key follows: give it to the auditors",
        public.key_id(),
        a.out.display()
    );
    crate::cli::out!("{}", public.to_pem());
    Ok(EXIT_OK)
}
