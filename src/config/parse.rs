//! Strict decoding of YAML or JSON into [`RawConfig`], then validation into [`EncryptionConfig`].

use std::cell::RefCell;
use std::path::Path;

use super::raw::RawConfig;
use super::{ConfigError, EncryptionConfig, Schema, validate};

/// Parses and validates config bytes; `path` only names the file in errors.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<EncryptionConfig, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Decode {
        path: path.to_path_buf(),
        field: None,
        message: format!("not UTF-8 text (byte {})", e.valid_up_to()),
    })?;
    parse_str(path, text)
}

/// Parses and validates config text; `path` only names the file in errors. No error message
/// ever contains text that could be key material from the input (see [`redact`]).
pub fn parse_str(path: &Path, text: &str) -> Result<EncryptionConfig, ConfigError> {
    parse_unredacted(path, text).map_err(|e| redact_error(e, &secret_like_values(text)))
}

fn parse_unredacted(path: &Path, text: &str) -> Result<EncryptionConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    let raw = decode(text).map_err(|(field, message)| ConfigError::Decode {
        path: path.to_path_buf(),
        field,
        message,
    })?;
    let schema = schema_of(&raw).map_err(|message| ConfigError::Decode {
        path: path.to_path_buf(),
        field: None,
        message,
    })?;
    validate::validate(raw, schema).map_err(|errors| ConfigError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

/// Strict decode. Errors carry the field path, and unknown fields are reported as the
/// apiserver does: `strict decoding error: unknown field "resources[0].providers[3].kms.pandas"`.
fn decode(text: &str) -> Result<RawConfig, (Option<String>, String)> {
    let failed_at: RefCell<Option<String>> = RefCell::new(None);
    let options = serde_saphyr::options! { with_snippet: false };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
            *failed_at.borrow_mut() = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let path = failed_at.into_inner().filter(|p| p != ".");
        let message = e.to_string();
        if let Some(field) = unknown_field(&message) {
            // serde_path_to_error's path already ends with the unknown field.
            let full = match &path {
                Some(p) if p == field || p.ends_with(&format!(".{field}")) => p.clone(),
                Some(p) => format!("{p}.{field}"),
                None => field.to_string(),
            };
            let at = location(&message);
            return (
                Some(full.clone()),
                format!("strict decoding error: unknown field {full:?}{at}"),
            );
        }
        match path {
            Some(p) => (
                Some(p.clone()),
                format!("strict decoding error at {p}: {message}"),
            ),
            None => (None, format!("strict decoding error: {message}")),
        }
    })
}

/// The name in serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The " at line L, column C" suffix of a decoder message, if any.
fn location(message: &str) -> String {
    message
        .rfind(" at line ")
        .map(|i| message[i..].to_string())
        .unwrap_or_default()
}

fn schema_of(raw: &RawConfig) -> Result<Schema, String> {
    match (raw.api_version.as_deref(), raw.kind.as_deref()) {
        (Some("apiserver.config.k8s.io/v1"), Some("EncryptionConfiguration")) => Ok(Schema::V1),
        (Some("v1"), Some("EncryptionConfig")) => Ok(Schema::LegacyV1),
        (None, _) | (_, None) => Err(
            "apiVersion and kind are required: apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration"
                .to_string(),
        ),
        (Some(v), Some(k)) => Err(format!(
            "unsupported apiVersion/kind {v}/{k}: expected apiserver.config.k8s.io/v1 EncryptionConfiguration (or the legacy v1 EncryptionConfig)"
        )),
    }
}

fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), "REDACTED");
    }
    out
}

/// Every message of an error, redacted.
fn redact_error(e: ConfigError, secrets: &[String]) -> ConfigError {
    match e {
        ConfigError::Decode {
            path,
            field,
            message,
        } => ConfigError::Decode {
            path,
            field: field.map(|f| redact(&f, secrets)),
            message: redact(&message, secrets),
        },
        ConfigError::Invalid { path, errors } => ConfigError::Invalid {
            path,
            errors: errors
                .into_iter()
                .map(|f| validate::FieldError {
                    field: redact(&f.field, secrets),
                    message: redact(&f.message, secrets),
                })
                .collect(),
        },
        other => other,
    }
}

/// Shortest token treated as possible key material (a 16-byte key is 24 base64 characters).
const MIN_SECRET_TOKEN: usize = 8;

/// Text that may be key material: the value after every `secret` key (quoted or not, glued to
/// the key, or as a `|`/`>` block), found textually so that it works on files that do not
/// decode, split into tokens, longest first.
fn secret_like_values(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let mut rest = *line;
        while let Some(i) = rest.find("secret") {
            rest = &rest[i + "secret".len()..];
            let after = rest.trim_start_matches(['"', '\'']).trim_start();
            let Some(value) = after.strip_prefix(':') else {
                continue;
            };
            let value = value.trim_start();
            let mut region = value.to_string();
            if value.starts_with('|') || value.starts_with('>') {
                // A block scalar: the following lines indented deeper than this one.
                let indent = line.len() - line.trim_start().len();
                for next in &lines[n + 1..] {
                    if next.trim().is_empty() || next.len() - next.trim_start().len() > indent {
                        region.push('\n');
                        region.push_str(next);
                    } else {
                        break;
                    }
                }
            }
            // Keys are base64: a token is a run of base64 (or URL-safe base64) characters, so
            // quotes, escapes and punctuation around it never hide it from redaction.
            for token in region.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=-_".contains(c)))
            {
                if token.len() >= MIN_SECRET_TOKEN && !found.iter().any(|f| f == token) {
                    found.push(token.to_string());
                }
            }
        }
    }
    // Longest first, so a token inside another is not left half-redacted.
    found.sort_by_key(|t| std::cmp::Reverse(t.len()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secret_values_in_yaml_and_json() {
        let y = "keys:\n- name: a\n  secret: c2VjcmV0c2VjcmV0\n";
        assert_eq!(secret_like_values(y), vec!["c2VjcmV0c2VjcmV0"]);
        let j = r#"{"keys":[{"name":"a","secret":"AAAABBBB"}]}"#;
        assert_eq!(secret_like_values(j), vec!["AAAABBBB"]);
        assert_eq!(
            secret_like_values("secret:dGhpXNzd29NtBZct:"),
            vec!["dGhpXNzd29NtBZct"]
        );
        assert_eq!(
            secret_like_values("{secret:|\n  YjZmZ2hpamtsbity}"),
            vec!["YjZmZ2hpamtsbity"]
        );
        assert!(secret_like_values("resources: [secrets]\n- secretbox: {}").is_empty());
    }

    #[test]
    fn no_error_echoes_a_secret() {
        // Inputs the fuzzer found (fuzz/regressions/config_parse).
        for (input, secret) in [
            ("secret:dGhpXNzd29NtBZct:", "dGhpXNzd29NtBZct"),
            ("{secret:|\n  YjZmZ2hpamtsbity}", "YjZmZ2hpamtsbity"),
            (
                "apiVersion: a\nkind: z,secret:Qc2VjcmHNlY3VyZQ",
                "Qc2VjcmHNlY3VyZQ",
            ),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: ['secret:ddGhpcypcy9yZA==,']\n  providers: [{identity: {}}]\n",
                "ddGhpcypcy9yZA==",
            ),
        ] {
            let e = parse_str(Path::new("x.yaml"), input).unwrap_err();
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }
}
