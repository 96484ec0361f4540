//! The canary: a Secret written through each apiserver, read back from etcd, to prove which key
//! that apiserver writes with. It is deleted again whatever the outcome.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::GroupResource;
use crate::codec::{ClassifyOptions, ProviderTable};
use crate::config::EncryptionConfig;
use crate::etcd::explain;
use crate::etcd::{EtcdError, layout};
use crate::kube::{Apiservers, KubeError};
use crate::model::KeyLabel;

/// The label atrest puts on what it creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "atrest");

/// Why the canary did not prove the write key.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// etcd stores the canary with another key than the config's write key for secrets (or not
    /// at all): that apiserver has not loaded the config, or writes with another one.
    #[error(
        "canary secret written through {url} is stored as {got}, not the write key {want}: that apiserver does not write with it"
    )]
    WrongKey {
        /// The apiserver the canary was written through.
        url: String,
        /// The key label etcd shows for it (`nothing` when it was not found).
        got: String,
        /// The write key the config gives secrets.
        want: KeyLabel,
    },
    /// Creating the canary secret failed: refused (RBAC, a missing namespace, admission) or the
    /// apiserver did not answer.
    #[error("creating canary secret {namespace}/{name} through {url} failed")]
    Create {
        /// The apiserver asked.
        url: String,
        /// The canary namespace.
        namespace: String,
        /// The canary's name.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: ::kube::Error,
    },
    /// An apiserver could not be reached directly.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The canary could not be read back from etcd.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// One canary that etcd stored as expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryWrite {
    /// The apiserver it was written through.
    pub url: String,
    /// The key label of the stored value (the secrets' write key).
    pub stored_as: String,
}

/// Writes a canary Secret in `namespace` through every apiserver and checks that etcd (under
/// `etcd_prefix`) stores it with the write key `config` gives secrets.
pub async fn check_write_key(
    apiservers: &Apiservers,
    namespace: &str,
    etcd: &etcd_client::Client,
    etcd_prefix: &str,
    config: &EncryptionConfig,
) -> Result<Vec<CanaryWrite>, CanaryError> {
    let resolved = config.resolve(&GroupResource::secrets());
    let want = resolved.write_key();
    let table = ProviderTable::new(&resolved);
    let secrets_prefix = layout::resource_prefix(etcd_prefix, &GroupResource::secrets());
    let mut out = Vec::new();
    for (i, url) in apiservers.urls().await.into_iter().enumerate() {
        let api = apiservers.base.for_url(&url)?;
        let secrets: ::kube::Api<Secret> = ::kube::Api::namespaced(api.client.clone(), namespace);
        let name = format!(
            "atrest-canary-{}-{i}",
            chrono::Utc::now().format("%H%M%S%3f")
        );
        secrets
            .create(&Default::default(), &canary(&name))
            .await
            .map_err(|source| CanaryError::Create {
                url: url.clone(),
                namespace: namespace.to_string(),
                name: name.clone(),
                source,
            })?;
        let stored = etcd
            .kv_client()
            .get(format!("{secrets_prefix}{namespace}/{name}"), None)
            .await;
        let _ = secrets.delete(&name, &Default::default()).await;
        let stored = stored.map_err(|e| EtcdError::Request {
            message: explain(&e),
            hint: "",
        })?;
        let got = stored.kvs().first().map(|v| {
            table
                .classify(v.key(), v.value(), &ClassifyOptions::default())
                .label
                .into_owned()
        });
        if got.as_ref() != Some(&want) {
            let got = got.map_or_else(|| "nothing".to_string(), |l| l.to_string());
            return Err(CanaryError::WrongKey { url, got, want });
        }
        out.push(CanaryWrite {
            url,
            stored_as: want.to_string(),
        });
    }
    Ok(out)
}

fn canary(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "canary".to_string(),
            ByteString(b"atrest".to_vec()),
        )])),
        ..Default::default()
    }
}
