//! Proof that every apiserver runs the config atrest wrote: find each one (explicit URLs, else
//! the endpoints of `default/kubernetes`, else the kubeconfig's server), read its `/metrics`,
//! and compare `last_config_info{hash}` with the file's hash; the identity Leases say how many
//! apiservers there are, so one that atrest cannot reach is never silently skipped.
//!
//! Two guards every writer uses: [`require_config`] (no apiserver runs another config than the
//! file) and [`require_kms_key_ids`] (the apiservers have seen each KMS plugin's current key ID).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::kube::{Api, KubeError, metrics};

/// How far the apiservers must agree before atrest writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Every apiserver reports the wanted value, and every identity Lease was reached.
    Every,
    /// No apiserver reports another value; one that reports none is let through (what is
    /// written is proven in etcd afterwards).
    NoneDiffers,
}

/// What atrest waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// Every apiserver runs the config with this hash.
    Config {
        /// `sha256:<hex>` of the config file.
        hash: String,
    },
    /// Every apiserver has seen each KMS plugin's current key ID.
    KmsKeyIds,
}

impl fmt::Display for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Awaited::Config { hash } => write!(f, "runs {hash}"),
            Awaited::KmsKeyIds => f.write_str("has seen the KMS plugins' current key IDs"),
        }
    }
}

/// The apiservers did not agree in time: who lags, and what each reports.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "not every apiserver {awaited}{}:\n{}",
    if .waited.is_zero() { String::new() } else { format!(" after {:?}", .waited) },
    .lagging.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
)]
pub struct NotConverged {
    /// What atrest waited for: a config hash, or the KMS key IDs.
    pub awaited: Awaited,
    /// How long atrest waited (zero: it asked once).
    pub waited: Duration,
    /// One line per apiserver (or unreached identity Lease) that is not there yet.
    pub lagging: Vec<String>,
    /// Identity Leases of apiservers atrest did not reach.
    pub unreached: Vec<String>,
}

/// Why waiting for the apiservers failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// They did not agree before the timeout.
    #[error(transparent)]
    NotConverged(#[from] NotConverged),
    /// An apiserver's metrics could not be read, where every one must be.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// Refuses to go on while an apiserver runs another config than `want` (the file's hash): its
/// writes would use another write key. Surveys every `2s` until `timeout` (zero: once), calling
/// `update` with each survey.
pub async fn require_config(
    apiservers: &Apiservers,
    want: &str,
    agreement: Agreement,
    timeout: Duration,
    update: &mut (dyn FnMut(&Convergence) + Send),
) -> Result<Convergence, NotConverged> {
    let deadline = Instant::now() + timeout;
    loop {
        // The timeout holds to the second, even when an apiserver accepts and never answers.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let Ok(c) = tokio::time::timeout(remaining, apiservers.survey(want)).await else {
            return Err(NotConverged {
                awaited: Awaited::Config {
                    hash: want.to_string(),
                },
                waited: timeout,
                lagging: vec![format!(
                    "{}: no answer within {} s (a frozen or overloaded apiserver)",
                    apiservers.base.url,
                    timeout.as_secs()
                )],
                unreached: Vec::new(),
            });
        };
        update(&c);
        if c.agrees(agreement) {
            return Ok(c);
        }
        // An apiserver too old to report its config never will: refuse now, not at the timeout.
        let too_old =
            agreement == Agreement::Every && c.apiservers.iter().any(|a| a.too_old().is_some());
        if too_old || Instant::now() >= deadline {
            return Err(NotConverged {
                awaited: Awaited::Config {
                    hash: want.to_string(),
                },
                waited: if too_old { Duration::ZERO } else { timeout },
                lagging: c.lagging(agreement),
                unreached: match agreement {
                    Agreement::Every => c.unreached.clone(),
                    Agreement::NoneDiffers => Vec::new(),
                },
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Refuses to go on until the apiservers have seen each KMS v2 plugin's current key ID
/// (`current`: provider → key ID); before that, an apiserver does not consider values on the
/// old key ID stale. With [`Agreement::Every`] an apiserver whose metrics cannot be read is an
/// error; with [`Agreement::NoneDiffers`] it is let through.
pub async fn require_kms_key_ids(
    apiservers: &Apiservers,
    current: &HashMap<String, String>,
    agreement: Agreement,
    timeout: Duration,
) -> Result<(), ConvergeError> {
    let mut want: Vec<(&String, String)> = current.iter().map(|(p, k)| (p, id_hash(k))).collect();
    want.sort();
    let deadline = Instant::now() + timeout;
    loop {
        let mut lagging = Vec::new();
        for url in apiservers.urls().await {
            let seen = match apiservers.base.for_url(&url) {
                Ok(api) => metrics::kms_key_id_hashes(&api).await,
                Err(e) => Err(e),
            };
            let seen = match (seen, agreement) {
                (Ok(s), _) => s,
                (Err(e), Agreement::Every) => return Err(e.into()),
                (Err(_), Agreement::NoneDiffers) => Default::default(),
            };
            for (provider, hash) in &want {
                let reported = seen.get(*provider);
                let lags = match agreement {
                    Agreement::Every => reported != Some(hash),
                    Agreement::NoneDiffers => reported.is_some_and(|h| h != hash),
                };
                if lags {
                    lagging.push(format!(
                        "{url}: KMS provider {provider} last reported key ID hash {}; the plugin's current key ID hashes to {hash}",
                        reported.map(String::as_str).unwrap_or("none")
                    ));
                }
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotConverged {
                awaited: Awaited::KmsKeyIds,
                waited: timeout,
                lagging,
                unreached: Vec::new(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What one apiserver reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiserverStatus {
    /// The URL atrest reads its `/metrics` from.
    pub url: String,
    /// Its identity Lease name, when its id hash matched one.
    pub lease: Option<String>,
    /// `sha256:<hex>` of the config it loaded last; `None` when its metrics show none (before
    /// 1.34, or no encryption config).
    pub config_hash: Option<String>,
    /// Why its metrics could not be read, when they could not.
    pub error: Option<String>,
    /// Its release (`gitVersion` of `GET /version`), when it answered.
    #[serde(default)]
    pub version: Option<String>,
}

impl ApiserverStatus {
    /// `url (lease)`, as apiservers are named in messages and reports.
    pub fn name(&self) -> String {
        match &self.lease {
            Some(l) => format!("{} ({l})", self.url),
            None => self.url.clone(),
        }
    }

    /// What it reports: its config hash, or why there is none.
    pub fn reported(&self) -> String {
        match (&self.config_hash, &self.error) {
            (_, Some(e)) => format!("unreachable: {e}"),
            (Some(h), None) => h.clone(),
            (None, None) => match self.too_old() {
                Some(why) => format!("no encryption config hash: {why}"),
                None => "no encryption config hash".into(),
            },
        }
    }

    /// Why this apiserver can never report a config hash (a release before the metric), if so.
    pub fn too_old(&self) -> Option<String> {
        if self.config_hash.is_some() {
            return None;
        }
        self.version
            .as_deref()
            .and_then(super::version::config_info_missing_reason)
    }
}

/// One survey of the apiservers: what each reports, and which identity Leases none of them
/// answered for.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Convergence {
    /// The hash every apiserver should report.
    pub want: String,
    /// Every apiserver atrest reached (or tried to), with what it reports.
    pub apiservers: Vec<ApiserverStatus>,
    /// Identity Leases of kube-apiservers (one per running apiserver).
    pub leases: Vec<String>,
    /// Leases whose apiserver atrest did not reach.
    pub unreached: Vec<String>,
}

impl Convergence {
    /// Every apiserver reports `want`, and every identity Lease was reached.
    pub fn converged(&self) -> bool {
        self.agrees(Agreement::Every)
    }

    /// Whether the survey shows the apiservers agree as far as `agreement` asks.
    pub fn agrees(&self, agreement: Agreement) -> bool {
        match agreement {
            Agreement::Every => {
                !self.apiservers.is_empty()
                    && self.unreached.is_empty()
                    && self.apiservers.iter().all(|a| self.reports_want(a))
            }
            Agreement::NoneDiffers => !self.apiservers.iter().any(|a| self.differs(a)),
        }
    }

    fn reports_want(&self, a: &ApiserverStatus) -> bool {
        a.config_hash.as_deref() == Some(self.want.as_str())
    }

    fn differs(&self, a: &ApiserverStatus) -> bool {
        a.config_hash.as_ref().is_some_and(|h| *h != self.want)
    }

    /// One line per apiserver that is not there yet, saying what it reports.
    pub fn lagging(&self, agreement: Agreement) -> Vec<String> {
        let mut out: Vec<String> = self
            .apiservers
            .iter()
            .filter(|a| match agreement {
                Agreement::Every => !self.reports_want(a),
                Agreement::NoneDiffers => self.differs(a),
            })
            .map(|a| format!("{}: reports {}", a.name(), a.reported()))
            .collect();
        if agreement == Agreement::Every {
            for l in &self.unreached {
                out.push(format!("apiserver with identity lease {l}: not reached"));
            }
        }
        out
    }
}

/// `sha256:<hex>` of an apiserver ID, as `apiserver_id_hash` shows it.
pub fn id_hash(lease_name: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(lease_name.as_bytes()))
    )
}

/// Where to find the apiservers.
#[derive(Clone)]
pub struct Apiservers {
    /// The kubeconfig's client; its credentials reach each apiserver directly.
    pub base: Api,
    /// `--apiserver` URLs; empty to discover.
    pub explicit: Vec<String>,
}

impl Apiservers {
    /// Identity Leases in kube-system (label `apiserver.kubernetes.io/identity=kube-apiserver`).
    pub async fn leases(&self) -> Result<Vec<String>, KubeError> {
        let (status, body) = self
            .base
            .get_text("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases?labelSelector=apiserver.kubernetes.io%2Fidentity%3Dkube-apiserver")
            .await?;
        if status != 200 {
            return Err(KubeError::Request {
                url: self.base.url.clone(),
                message: format!("listing identity leases answered {status}"),
            });
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        Ok(v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The URLs to ask: explicit, else the endpoints of default/kubernetes, else the base URL.
    pub async fn urls(&self) -> Vec<String> {
        if !self.explicit.is_empty() {
            return self.explicit.clone();
        }
        if let Ok((200, body)) = self
            .base
            .get_text("/api/v1/namespaces/default/endpoints/kubernetes")
            .await
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let mut urls = Vec::new();
            for subset in v["subsets"].as_array().into_iter().flatten() {
                let port = subset["ports"]
                    .as_array()
                    .and_then(|p| {
                        p.iter()
                            .find(|p| p["name"] == "https")
                            .or_else(|| p.first())
                    })
                    .and_then(|p| p["port"].as_u64())
                    .unwrap_or(6443);
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    if let Some(ip) = a["ip"].as_str() {
                        let host = if ip.contains(':') {
                            format!("[{ip}]")
                        } else {
                            ip.to_string()
                        };
                        urls.push(format!("https://{host}:{port}"));
                    }
                }
            }
            if !urls.is_empty() {
                return urls;
            }
        }
        vec![self.base.url.clone()]
    }

    /// Asks every apiserver once.
    pub async fn survey(&self, want: &str) -> Convergence {
        let leases = self.leases().await.unwrap_or_default();
        let mut apiservers = Vec::new();
        for url in self.urls().await {
            let status = match self.base.for_url(&url) {
                Err(e) => ApiserverStatus {
                    url,
                    lease: None,
                    config_hash: None,
                    error: Some(e.to_string()),
                    version: None,
                },
                Ok(api) => match metrics::config_report(&api).await {
                    Ok(r) => ApiserverStatus {
                        lease: r
                            .apiserver_id_hash
                            .as_ref()
                            .and_then(|h| leases.iter().find(|l| id_hash(l) == *h).cloned()),
                        url,
                        config_hash: r.config_hash,
                        error: None,
                        version: super::version::git_version(&api).await.ok(),
                    },
                    Err(e) => ApiserverStatus {
                        url,
                        lease: None,
                        config_hash: None,
                        error: Some(e.to_string()),
                        version: None,
                    },
                },
            };
            apiservers.push(status);
        }
        // Every lease should belong to an apiserver that answered. (Without explicit URLs and
        // without endpoints, a load balancer URL may answer for several: then count answers.)
        let matched: Vec<&String> = apiservers.iter().filter_map(|a| a.lease.as_ref()).collect();
        let unreached = if apiservers.iter().any(|a| a.lease.is_some()) || !self.explicit.is_empty()
        {
            leases
                .iter()
                .filter(|l| !matched.contains(l))
                .cloned()
                .collect()
        } else if leases.len() > apiservers.len() {
            leases.clone()
        } else {
            Vec::new()
        };
        Convergence {
            want: want.to_string(),
            apiservers,
            leases,
            unreached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apiserver(url: &str, hash: Option<&str>, error: Option<&str>) -> ApiserverStatus {
        ApiserverStatus {
            url: url.into(),
            lease: None,
            config_hash: hash.map(str::to_string),
            error: error.map(str::to_string),
            version: None,
        }
    }

    fn survey(apiservers: Vec<ApiserverStatus>, unreached: &[&str]) -> Convergence {
        Convergence {
            want: "k8s:enc:v1:new".into(),
            apiservers,
            leases: Vec::new(),
            unreached: unreached.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_needs_each_apiserver_on_the_hash_and_every_lease_reached() {
        let on = apiserver("https://a", Some("k8s:enc:v1:new"), None);
        assert!(survey(vec![on.clone()], &[]).agrees(Agreement::Every));
        assert!(
            !survey(vec![], &[]).agrees(Agreement::Every),
            "nobody answered"
        );
        let c = survey(vec![on.clone()], &["kube-apiserver-b"]);
        assert!(!c.agrees(Agreement::Every));
        assert_eq!(
            c.lagging(Agreement::Every),
            ["apiserver with identity lease kube-apiserver-b: not reached"]
        );
        let silent = apiserver("https://b", None, Some("connection refused"));
        let c = survey(vec![on, silent], &[]);
        assert!(!c.agrees(Agreement::Every));
        assert_eq!(
            c.lagging(Agreement::Every),
            ["https://b: reports unreachable: connection refused"]
        );
    }

    #[test]
    fn none_differs_lets_silent_apiservers_through_but_not_another_config() {
        let on = apiserver("https://a", Some("k8s:enc:v1:new"), None);
        let silent = apiserver("https://b", None, Some("forbidden"));
        let c = survey(vec![on.clone(), silent.clone()], &["lease-c"]);
        assert!(c.agrees(Agreement::NoneDiffers));
        assert!(c.lagging(Agreement::NoneDiffers).is_empty());
        let old = apiserver("https://c", Some("k8s:enc:v1:old"), None);
        let c = survey(vec![on, silent, old], &[]);
        assert!(!c.agrees(Agreement::NoneDiffers));
        assert_eq!(
            c.lagging(Agreement::NoneDiffers),
            ["https://c: reports k8s:enc:v1:old"]
        );
    }

    #[test]
    fn not_converged_says_what_was_awaited_and_who_lags() {
        let e = NotConverged {
            awaited: Awaited::Config {
                hash: "k8s:enc:v1:new".into(),
            },
            waited: Duration::from_secs(3),
            lagging: vec!["https://c: reports k8s:enc:v1:old".into()],
            unreached: Vec::new(),
        };
        assert_eq!(
            e.to_string(),
            "not every apiserver runs k8s:enc:v1:new after 3s:\n  - https://c: reports k8s:enc:v1:old"
        );
        let once = NotConverged {
            awaited: Awaited::KmsKeyIds,
            waited: Duration::ZERO,
            ..e
        };
        assert!(
            once.to_string()
                .starts_with("not every apiserver has seen the KMS plugins' current key IDs:\n"),
            "{once}"
        );
    }

    #[test]
    fn apiserver_id_hash_matches_the_upstream_vector() {
        // metrics_test.go: ID "testAPIServerID".
        assert_eq!(
            id_hash("testAPIServerID"),
            "sha256:14f9d63e669337ac6bfda2e2162915ee6a6067743eddd4e5c374b572f951ff37"
        );
    }
}
