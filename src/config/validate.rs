//! The apiserver's validation rules (`validation_encryption.go`), plus the load-time masking
//! check of `getTransformerOverridesAndKMSPluginProbes`. Messages follow the apiserver's wording
//! so that an admin can search for them; none ever contains a secret.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use super::raw::{RawConfig, RawKey, RawKms, RawProvider};
use super::{EncryptionConfig, KmsProvider, KmsVersion, Provider, ResourceRule, Schema};
use crate::GroupResource;
use crate::keys::{Key, decode_secret};
use crate::model::KeyProvider;

/// One validation failure, at a field path like `resources[0].providers[1].aescbc.keys[0].secret`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field path, as the apiserver prints it.
    pub field: String,
    /// The apiserver's message for it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const OVERLAP_ERR: &str = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
const DUPLICATE_RESOURCE_ERR: &str = "the same resource cannot be specified multiple times";

pub(super) fn validate(
    raw: RawConfig,
    schema: Schema,
) -> Result<EncryptionConfig, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(FieldError { field, message });
    if raw.resources.is_empty() {
        err(
            "resources".into(),
            "Required value: at least one resources is required".into(),
        );
        return Err(errs);
    }

    let mut kms_names: HashSet<String> = HashSet::new();
    let mut rules = Vec::with_capacity(raw.resources.len());
    for (i, conf) in raw.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if conf.resources.is_empty() {
            err(
                r.clone(),
                format!("Required value: at least one {r} is required"),
            );
        }
        for (field, message) in resource_overlap(&conf.resources, &r) {
            err(field, message);
        }
        for (field, message) in resource_names(&conf.resources, &r) {
            err(field, message);
        }
        if conf.providers.is_empty() {
            err(
                p.clone(),
                format!("Required value: at least one {p} is required"),
            );
        }
        let mut providers = Vec::with_capacity(conf.providers.len());
        for (j, provider) in conf.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            match single_provider(provider) {
                Err(message) => err(path, message),
                Ok(()) => match build_provider(provider, &path, &mut kms_names) {
                    Ok(built) => providers.push(built),
                    Err(list) => list.into_iter().for_each(|(f, m)| err(f, m)),
                },
            }
        }
        rules.push(ResourceRule {
            resources: conf.resources.clone(),
            providers,
        });
    }
    if errs.is_empty() {
        masking(&rules, &mut errs);
    }
    if errs.is_empty() {
        Ok(EncryptionConfig { schema, rules })
    } else {
        Err(errs)
    }
}

fn resource_overlap(resources: &[String], path: &str) -> Vec<(String, String)> {
    if resources.len() < 2 {
        return Vec::new();
    }
    let grs: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let any = GroupResource::new("*", "*");
    let (mut overlap, mut duplicate) = (false, false);
    for (i, r1) in grs.iter().enumerate() {
        for (j, r2) in grs.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !duplicate {
                duplicate = true;
                continue;
            }
            if overlap {
                continue;
            }
            if *r1 == any {
                overlap = true;
                continue;
            }
            if r1.group != r2.group {
                continue;
            }
            if r1.resource == "*" || r2.resource == "*" {
                overlap = true;
            }
        }
    }
    let list = format!("{resources:?}");
    let mut out = Vec::new();
    if duplicate {
        out.push((
            path.to_string(),
            format!("Invalid value: {list}: {DUPLICATE_RESOURCE_ERR}"),
        ));
    }
    if overlap {
        out.push((
            path.to_string(),
            format!("Invalid value: {list}: {OVERLAP_ERR}"),
        ));
    }
    out
}

fn resource_names(resources: &[String], path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (j, res) in resources.iter().enumerate() {
        let field = format!("{path}[{j}]");
        let gr = GroupResource::parse(res);
        let message = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else if gr.group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
        } else if gr.group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if gr.group == "*" && gr.resource != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        out.push((field, format!("Invalid value: {res:?}: {message}")));
    }
    out
}

fn single_provider(p: &RawProvider) -> Result<(), String> {
    let found = [
        p.kms.is_some(),
        p.aesgcm.is_some(),
        p.aescbc.is_some(),
        p.secretbox.is_some(),
        p.identity.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    match found {
        0 => Err("Invalid value: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity".into()),
        1 => Ok(()),
        _ => Err("Invalid value: more than one provider specified in a single element, should split into different list elements".into()),
    }
}

type Errs = Vec<(String, String)>;

fn build_provider(
    p: &RawProvider,
    path: &str,
    kms_names: &mut HashSet<String>,
) -> Result<Provider, Errs> {
    let keyed = [
        (KeyProvider::Aesgcm, &p.aesgcm),
        (KeyProvider::Aescbc, &p.aescbc),
        (KeyProvider::Secretbox, &p.secretbox),
    ];
    for (provider, raw) in keyed {
        if let Some(raw) = raw {
            let keys_path = format!("{path}.{}.keys", provider.name());
            return build_keys(provider, &raw.keys, &keys_path)
                .map(|keys| Provider::Keys { provider, keys });
        }
    }
    if let Some(kms) = &p.kms {
        let result = build_kms(kms, &format!("{path}.kms"), kms_names);
        kms_names.insert(kms.name.clone());
        return result.map(Provider::Kms);
    }
    Ok(Provider::Identity)
}

fn build_keys(provider: KeyProvider, raw: &[RawKey], path: &str) -> Result<Vec<Arc<Key>>, Errs> {
    if raw.is_empty() {
        return Err(vec![(
            path.to_string(),
            "Required value: at least one keys is required".into(),
        )]);
    }
    let mut errs = Vec::new();
    let mut keys = Vec::with_capacity(raw.len());
    let expected = provider.allowed_lengths();
    for (i, key) in raw.iter().enumerate() {
        let kp = format!("{path}[{i}]");
        if key.name.is_empty() {
            errs.push((
                format!("{kp}.name"),
                "Required value: name is a mandatory field for a key".into(),
            ));
        }
        if key.secret.0.is_empty() {
            errs.push((
                format!("{kp}.secret"),
                "Required value: secret is a mandatory field for a key".into(),
            ));
            continue;
        }
        let Some(material) = decode_secret(&key.secret.0) else {
            errs.push((
                format!("{kp}.secret"),
                "Invalid value: \"REDACTED\": secrets must be base64 encoded".into(),
            ));
            continue;
        };
        if !expected.contains(&material.len()) {
            errs.push((
                format!("{kp}.secret"),
                format!(
                    "Invalid value: \"REDACTED\": secret is not of the expected length, got {}, expected one of {}",
                    material.len(),
                    go_int_slice(expected)
                ),
            ));
            continue;
        }
        if let Ok(k) = Key::new(key.name.clone(), provider, material) {
            keys.push(Arc::new(k));
        }
    }
    if errs.is_empty() { Ok(keys) } else { Err(errs) }
}

/// Validates one `kms` provider the way the apiserver does, errors in the apiserver's order.
fn build_kms(raw: &RawKms, path: &str, kms_names: &HashSet<String>) -> Result<KmsProvider, Errs> {
    let mut errs = Vec::new();
    // Defaults (defaults.go): apiVersion v1, timeout 3s, cachesize 1000 for v1 only.
    let api_version = raw.api_version.clone().unwrap_or_default();
    let api_version = if api_version.is_empty() {
        "v1".to_string()
    } else {
        api_version
    };
    kms_name_errors(raw, path, &api_version, kms_names, &mut errs);
    kms_timeout_errors(raw, path, &mut errs);
    kms_endpoint_errors(raw, path, &mut errs);
    kms_cachesize_errors(raw, path, &api_version, &mut errs);
    let version = kms_version(&api_version, path, &mut errs);
    match version {
        Some(version) if errs.is_empty() => Ok(KmsProvider {
            version,
            name: raw.name.clone(),
            endpoint: raw.endpoint.clone(),
            cachesize: raw.cachesize,
            timeout: raw.timeout.clone(),
        }),
        _ => Err(errs),
    }
}

/// The KMS provider name: required, no `:` beyond v1, unique in the file.
fn kms_name_errors(
    raw: &RawKms,
    path: &str,
    api_version: &str,
    kms_names: &HashSet<String>,
    errs: &mut Errs,
) {
    let name_path = format!("{path}.name");
    if raw.name.is_empty() {
        errs.push((
            name_path.clone(),
            "Required value: name is a mandatory field for a provider".into(),
        ));
    }
    if api_version != "v1" && raw.name.contains(':') {
        errs.push((
            name_path.clone(),
            format!(
                "Invalid value: {:?}: invalid KMS provider name {}, must not contain ':'",
                raw.name, raw.name
            ),
        ));
    }
    // The apiserver atrest drives runs with automatic reload, where v1 names must be unique too.
    if kms_names.contains(&raw.name) {
        errs.push((
            name_path,
            format!(
                "Invalid value: {:?}: duplicate KMS provider name {}, names must be unique",
                raw.name, raw.name
            ),
        ));
    }
}

/// The KMS timeout, when given: a positive Go duration.
fn kms_timeout_errors(raw: &RawKms, path: &str, errs: &mut Errs) {
    match raw.timeout.as_deref().map(parse_go_duration) {
        None => {}
        Some(Ok(d)) if d > 0 => {}
        Some(Ok(_)) => errs.push((
            format!("{path}.timeout"),
            "Invalid value: timeout should be a positive value".into(),
        )),
        Some(Err(e)) => errs.push((format!("{path}.timeout"), format!("Invalid value: {e}"))),
    }
}

/// The KMS endpoint: required, and a `unix://` socket.
fn kms_endpoint_errors(raw: &RawKms, path: &str, errs: &mut Errs) {
    let endpoint_path = format!("{path}.endpoint");
    if raw.endpoint.is_empty() {
        errs.push((
            endpoint_path,
            "Invalid value: \"\": endpoint is a mandatory field for a kms".into(),
        ));
    } else {
        match raw.endpoint.split_once("://") {
            Some(("unix", _)) => {}
            Some((scheme, _)) => errs.push((
                endpoint_path,
                format!("Invalid value: {:?}: unsupported scheme {scheme:?} for KMS provider, only unix is supported", raw.endpoint),
            )),
            None => errs.push((
                endpoint_path,
                format!("Invalid value: {:?}: unsupported scheme \"\" for KMS provider, only unix is supported", raw.endpoint),
            )),
        }
    }
}

/// The KMS cache size: v1 only, and never 0.
fn kms_cachesize_errors(raw: &RawKms, path: &str, api_version: &str, errs: &mut Errs) {
    let cache_path = format!("{path}.cachesize");
    if api_version != "v1" && raw.cachesize.is_some() {
        errs.push((
            cache_path,
            "Invalid value: cachesize is not supported in v2".into(),
        ));
    } else if api_version == "v1" && raw.cachesize == Some(0) {
        errs.push((
            cache_path,
            "Invalid value: 0: cachesize should be a positive value, or negative to disable".into(),
        ));
    }
}

/// The KMS API version (after defaulting), or an error for any but v1 and v2.
fn kms_version(api_version: &str, path: &str, errs: &mut Errs) -> Option<KmsVersion> {
    match api_version {
        "v1" => Some(KmsVersion::V1),
        "v2" => Some(KmsVersion::V2),
        other => {
            errs.push((
                format!("{path}.apiVersion"),
                format!("Invalid value: {other:?}: unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported"),
            ));
            None
        }
    }
}

/// The load-time rule: a resource is masked by an earlier `*.<group>` or `*.*`.
fn masking(rules: &[ResourceRule], errs: &mut Vec<FieldError>) {
    let mut registered: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::new("*", "*");
    for (i, rule) in rules.iter().enumerate() {
        for (j, res) in rule.resources.iter().enumerate() {
            let gr = GroupResource::parse(res);
            let group_any = GroupResource::new(gr.group.clone(), "*");
            let masked_by = if registered.contains(&group_any) {
                Some(group_any)
            } else if registered.contains(&any) {
                Some(any.clone())
            } else {
                None
            };
            if let Some(by) = masked_by {
                errs.push(FieldError {
                    field: format!("resources[{i}].resources[{j}]"),
                    message: format!(
                        "resource {:?} is masked by earlier rule {:?}",
                        gr.config_name(),
                        by.config_name()
                    ),
                });
            }
        }
        // Registered after the whole entry, as the apiserver appends per entry in order.
        for res in &rule.resources {
            registered.insert(GroupResource::parse(res));
        }
    }
}

/// `[16 24 32]`, as Go prints an int slice.
fn go_int_slice(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|n| n.to_string()).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `time.ParseDuration`, returning nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let number: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    let ns = total as i128;
    Ok(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_go_duration("3s").unwrap(), 3_000_000_000);
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert_eq!(parse_go_duration("-1s").unwrap(), -1_000_000_000);
        assert!(parse_go_duration("3").is_err());
        assert!(parse_go_duration("3x").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn base64_like_go() {
        assert!(decode_secret("c2VjcmV0").is_some());
        assert!(decode_secret("c2VjcmV0\n").is_some());
        assert!(decode_secret("c2VjcmV0c").is_none());
        assert!(decode_secret("c2VjcmV0cw").is_none(), "padding is required");
        assert!(decode_secret("not base64!").is_none());
    }
}
