//! Writing a config back out. atrest writes a canonical YAML form: every string quoted, the
//! fields in the apiserver's order, so that what it writes always parses back to the same config.

use std::fmt::Write;

use zeroize::Zeroizing;

use super::{EncryptionConfig, Provider, Schema};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{0}")]
    Refused(String),
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The config as YAML. The result holds key material, so it is returned zeroizing.
pub fn render_yaml(config: &EncryptionConfig) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    let (api_version, kind) = match config.schema {
        Schema::V1 => ("apiserver.config.k8s.io/v1", "EncryptionConfiguration"),
        Schema::LegacyV1 => ("v1", "EncryptionConfig"),
    };
    let _ = writeln!(out, "apiVersion: {api_version}\nkind: {kind}\nresources:");
    for rule in &config.rules {
        let _ = writeln!(out, "  - resources:");
        for r in &rule.resources {
            let _ = writeln!(out, "      - {}", q(r));
        }
        let _ = writeln!(out, "    providers:");
        for p in &rule.providers {
            match p {
                Provider::Identity => {
                    let _ = writeln!(out, "      - identity: {{}}");
                }
                Provider::Keys { provider, keys } => {
                    let _ = writeln!(out, "      - {}:\n          keys:", provider.name());
                    for k in keys {
                        let secret = k.secret_base64();
                        let _ = writeln!(out, "            - name: {}", q(k.name()));
                        let _ = writeln!(out, "              secret: {}", q(&secret));
                    }
                }
                Provider::Kms(k) => {
                    let _ = writeln!(out, "      - kms:");
                    let _ = writeln!(out, "          apiVersion: {}", k.version_str());
                    let _ = writeln!(out, "          name: {}", q(&k.name));
                    let _ = writeln!(out, "          endpoint: {}", q(&k.endpoint));
                    if let Some(c) = k.cachesize {
                        let _ = writeln!(out, "          cachesize: {c}");
                    }
                    if let Some(t) = &k.timeout {
                        let _ = writeln!(out, "          timeout: {}", q(t));
                    }
                }
            }
        }
    }
    out
}
