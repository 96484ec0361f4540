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

/// Parses and validates config text; `path` only names the file in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<EncryptionConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    let raw = decode(text).map_err(|(field, message)| ConfigError::Decode {
        path: path.to_path_buf(),
        field,
        message: redact(text, &message),
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

/// Decoder messages may quote input; never let them quote a `secret` value.
fn redact(text: &str, message: &str) -> String {
    let mut out = message.to_string();
    for secret in secret_like_values(text) {
        if secret.len() >= 4 {
            out = out.replace(&secret, "REDACTED");
        }
    }
    out
}

/// Every scalar that follows a `secret` key, in YAML or JSON form, found textually so that it
/// works on files that do not decode.
fn secret_like_values(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("secret") {
        rest = &rest[i + "secret".len()..];
        let after = rest.trim_start_matches(['"', '\'']).trim_start();
        if let Some(value) = after.strip_prefix(':') {
            let value = value.trim_start();
            let end = value.find(['\n', ',', '}', '\r']).unwrap_or(value.len());
            let v = value[..end].trim().trim_matches(['"', '\'']).to_string();
            if !v.is_empty() {
                found.push(v);
            }
        }
    }
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
    }
}
