//! Which Kubernetes release an apiserver runs (`GET /version`), and what that release offers
//! atrest. The supported range is proven by the version matrix (`scripts/matrix.sh`, README
//! "Supported versions").

use super::{Api, KubeError};

/// The oldest Kubernetes minor atrest supports: the first whose apiservers export
/// `apiserver_encryption_config_controller_last_config_info` (k8s.io/apiserver v0.34.0; not
/// in v0.33), the per-apiserver proof of the loaded config that every rotate step waits for.
pub const OLDEST_MINOR: u32 = 34;
/// The newest Kubernetes minor the version matrix proves.
pub const NEWEST_MINOR: u32 = 37;

/// `(major, minor)` of a `gitVersion` such as `v1.34.4` or `v1.35.0-rc.1+abc`.
pub fn major_minor(git_version: &str) -> Option<(u32, u32)> {
    let v = git_version.strip_prefix('v').unwrap_or(git_version);
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Whether a release predates the config-info metric (only 1.x before 1.34).
pub fn predates_config_info(git_version: &str) -> bool {
    matches!(major_minor(git_version), Some((1, m)) if m < OLDEST_MINOR)
}

/// Why an apiserver of this release cannot be proven to run a config, or `None` when it can.
pub fn config_info_missing_reason(git_version: &str) -> Option<String> {
    predates_config_info(git_version).then(|| {
        format!(
            "kube-apiserver {git_version} predates apiserver_encryption_config_controller_last_config_info \
             (added in Kubernetes 1.{OLDEST_MINOR}), so atrest cannot prove which encryption config it runs; \
             atrest supports kube-apiserver 1.{OLDEST_MINOR} to 1.{NEWEST_MINOR}: upgrade it first"
        )
    })
}

/// The apiserver's `gitVersion` from `GET /version`.
pub async fn git_version(api: &Api) -> Result<String, KubeError> {
    let (status, body) = api.get_text("/version").await?;
    let err = |message: String| KubeError::Request {
        url: api.url.clone(),
        message,
    };
    if status != 200 {
        return Err(err(format!("GET /version answered {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| err(format!("GET /version: not JSON: {e}")))?;
    v["gitVersion"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| err("GET /version: no gitVersion".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_pre_release_versions() {
        assert_eq!(major_minor("v1.34.4"), Some((1, 34)));
        assert_eq!(major_minor("v1.35.0-rc.1+abc"), Some((1, 35)));
        assert_eq!(major_minor("v1.33.13-eks-1"), Some((1, 33)));
        assert_eq!(major_minor("v1.36+"), Some((1, 36)));
        assert_eq!(major_minor("master"), None);
    }

    #[test]
    fn only_releases_before_1_34_lack_the_config_info_metric() {
        assert!(predates_config_info("v1.33.13"));
        assert!(predates_config_info("v1.29.0"));
        assert!(!predates_config_info("v1.34.0"));
        assert!(!predates_config_info("v1.37.2"));
        assert!(!predates_config_info("v0.0.0-master+$Format:%H$"));
        let why = config_info_missing_reason("v1.33.13").unwrap();
        assert!(
            why.contains("v1.33.13") && why.contains("1.34 to 1.37"),
            "{why}"
        );
        assert_eq!(config_info_missing_reason("v1.34.4"), None);
    }
}
