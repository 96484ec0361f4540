//! What an apiserver reports about its encryption config on `/metrics` (SPEC §5.2).

use super::{Api, KubeError};

const LAST_CONFIG_INFO: &str = "apiserver_encryption_config_controller_last_config_info";
const RELOADS_TOTAL: &str = "apiserver_encryption_config_controller_automatic_reloads_total";

/// One apiserver's view of its encryption config.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ConfigReport {
    /// `sha256:<hex>` of the config file it loaded last, if it reports one.
    pub config_hash: Option<String>,
    /// `sha256:<hex>` of its apiserver ID (the identity Lease name).
    pub apiserver_id_hash: Option<String>,
    /// Automatic reloads that succeeded since it started, if it reports them.
    pub reload_successes: Option<f64>,
    /// Automatic reloads that failed: a file it refused to load (it keeps the previous one).
    pub reload_failures: Option<f64>,
}

/// Label `name` of a Prometheus sample line (exact label name, not a suffix of another).
pub fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let labels = &line[open + 1..close];
    let mut rest = labels;
    while !rest.is_empty() {
        let eq = rest.find("=\"")?;
        let key = rest[..eq].trim_start_matches(',').trim();
        let after = &rest[eq + 2..];
        // Values are escaped Prometheus strings; our values (hashes, names) hold no quotes.
        let end = after.find('"')?;
        if key == name {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    None
}

fn value(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// Parses the encryption-config series out of a `/metrics` page.
pub fn parse(text: &str) -> ConfigReport {
    let mut r = ConfigReport::default();
    for line in text.lines() {
        if line.starts_with(LAST_CONFIG_INFO) && line[LAST_CONFIG_INFO.len()..].starts_with('{') {
            r.config_hash = label(line, "hash").map(str::to_string);
            r.apiserver_id_hash = label(line, "apiserver_id_hash").map(str::to_string);
        } else if line.starts_with(RELOADS_TOTAL) && line[RELOADS_TOTAL.len()..].starts_with('{') {
            match label(line, "status") {
                Some("success") => r.reload_successes = value(line),
                Some("failure") => r.reload_failures = value(line),
                _ => {}
            }
        }
    }
    r
}

const KMS_STATUS: &str = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds";

/// KMS v2 provider → the key ID hash (`sha256:<hex>`) its latest `Status` returned, from the
/// series with the newest timestamp.
pub fn parse_kms_key_id_hashes(text: &str) -> std::collections::HashMap<String, String> {
    let mut latest: std::collections::HashMap<String, (f64, String)> = Default::default();
    for line in text.lines() {
        if !(line.starts_with(KMS_STATUS) && line[KMS_STATUS.len()..].starts_with('{')) {
            continue;
        }
        let (Some(provider), Some(hash), Some(ts)) = (
            label(line, "provider_name"),
            label(line, "key_id_hash"),
            value(line),
        ) else {
            continue;
        };
        let e = latest
            .entry(provider.to_string())
            .or_insert((f64::MIN, String::new()));
        if ts >= e.0 {
            *e = (ts, hash.to_string());
        }
    }
    latest.into_iter().map(|(p, (_, h))| (p, h)).collect()
}

/// What each KMS v2 provider's last `Status` returned on one apiserver.
pub async fn kms_key_id_hashes(
    api: &Api,
) -> Result<std::collections::HashMap<String, String>, KubeError> {
    let (status, body) = api.get_text("/metrics").await?;
    if status != 200 {
        return Err(KubeError::Request {
            url: api.url.clone(),
            message: format!("GET /metrics answered {status}"),
        });
    }
    Ok(parse_kms_key_id_hashes(&body))
}

/// Reads one apiserver's `/metrics`.
pub async fn config_report(api: &Api) -> Result<ConfigReport, KubeError> {
    let (status, body) = api.get_text("/metrics").await?;
    if status != 200 {
        return Err(KubeError::Request {
            url: api.url.clone(),
            message: format!("GET /metrics answered {status}: {}", body.trim()),
        });
    }
    Ok(parse(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_last_config_info_and_reloads() {
        let text = "# HELP x\napiserver_encryption_config_controller_last_config_info{apiserver_id_hash=\"sha256:aa\",hash=\"sha256:bb\"} 1\n\
                    apiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash=\"sha256:aa\",status=\"failure\"} 2\n\
                    apiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash=\"sha256:aa\",status=\"success\"} 3\n";
        let r = parse(text);
        assert_eq!(r.config_hash.as_deref(), Some("sha256:bb"));
        assert_eq!(r.apiserver_id_hash.as_deref(), Some("sha256:aa"));
        assert_eq!(
            (r.reload_failures, r.reload_successes),
            (Some(2.0), Some(3.0))
        );
    }
}
