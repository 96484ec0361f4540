//! Whole objects, before and after: what "nothing lost" means in an end-to-end test.
//!
//! [`ControlPlane::objects`] dumps every object of the given resources in one namespace twice
//! over: as the API serves it (data, binaryData, type, immutable, labels, annotations,
//! ownerReferences, finalizers, uid, creationTimestamp, managedFields: everything but
//! `resourceVersion`, which every rewrite moves), and, where the config on disk opens the
//! stored values without a KMS plugin, as etcd stores it, opened (the bytes the apiserver
//! decodes). A rewrite that keeps every byte leaves both equal. [`create_rich_objects`] seeds
//! objects that use every one of those fields, so that dropping any of them shows.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::control_plane::{ControlPlane, ETCD_PREFIX};
use crate::leak;

/// A resource as the API lists it and etcd stores it.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// API group ("" for the core group).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural name.
    pub plural: &'static str,
}

/// Secrets (core/v1).
pub const SECRETS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "secrets",
};
/// ConfigMaps (core/v1).
pub const CONFIGMAPS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "configmaps",
};
/// The test custom resource `gadgets.atrest.test/v1` (kind Gadget, namespaced; installed with
/// `ControlPlane::install_crd("atrest.test", "gadgets", "Gadget")`).
pub const GADGETS: Resource = Resource {
    group: "atrest.test",
    version: "v1",
    plural: "gadgets",
};

/// [`GADGETS`] for kube's dynamic API.
pub fn gadget_ar() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource {
        group: "atrest.test".into(),
        version: "v1".into(),
        api_version: "atrest.test/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    }
}

impl Resource {
    fn list_path(&self, ns: &str) -> String {
        match self.group {
            "" => format!("/api/{}/namespaces/{ns}/{}", self.version, self.plural),
            g => format!("/apis/{g}/{}/namespaces/{ns}/{}", self.version, self.plural),
        }
    }

    fn etcd_prefix(&self, ns: &str) -> String {
        match self.group {
            "" => format!("{ETCD_PREFIX}/{}/{ns}/", self.plural),
            g => format!("{ETCD_PREFIX}/{g}/{}/{ns}/", self.plural),
        }
    }

    fn group_resource(&self) -> atrest::GroupResource {
        match self.group {
            "" => atrest::GroupResource::parse(self.plural),
            g => atrest::GroupResource::parse(&format!("{}.{g}", self.plural)),
        }
    }
}

/// Every object of some resources in one namespace, whole.
#[derive(Debug, PartialEq)]
pub struct Objects {
    /// `plural/name` → the object as the API serves it, without `metadata.resourceVersion`.
    pub api: BTreeMap<String, Value>,
    /// etcd key → the stored value, opened with the config on disk (a value it cannot open
    /// fails the test); `None` when a resource's config has a KMS provider (opening needs the
    /// plugin): then only the API form is compared.
    pub stored: Option<BTreeMap<String, Vec<u8>>>,
}

impl Objects {
    /// Fails the test unless `after` holds the same objects, field for field and byte for byte.
    #[track_caller]
    pub fn assert_kept(&self, after: &Objects, what: &str) {
        assert_eq!(
            self.api.keys().collect::<Vec<_>>(),
            after.api.keys().collect::<Vec<_>>(),
            "{what}: the same objects"
        );
        for (name, before) in &self.api {
            assert_eq!(
                before, &after.api[name],
                "{what}: {name} as the API serves it"
            );
        }
        if let (Some(a), Some(b)) = (&self.stored, &after.stored) {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{what}: the same keys in etcd"
            );
            for (key, before) in a {
                // Never print the bytes: they hold the seeded values.
                assert!(
                    before == &b[key],
                    "{what}: {key}: the stored object (opened) changed"
                );
            }
        }
    }
}

impl ControlPlane {
    /// Every object of `resources` in namespace `ns`, through the API and, where the config on
    /// disk opens every stored value, from etcd (see the module comment).
    pub async fn objects(&self, ns: &str, resources: &[Resource]) -> Objects {
        let client = self.client().await;
        let mut api = BTreeMap::new();
        for r in resources {
            let req = http::Request::get(r.list_path(ns))
                .body(Vec::new())
                .unwrap();
            let list: Value = client
                .request(req)
                .await
                .unwrap_or_else(|e| panic!("list {} in {ns}: {e}", r.plural));
            for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                let name = item["metadata"]["name"].as_str().unwrap().to_string();
                if let Some(meta) = item["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                }
                api.insert(format!("{}/{name}", r.plural), item);
            }
        }
        Objects {
            api,
            stored: self.stored_opened(ns, resources).await,
        }
    }

    async fn stored_opened(
        &self,
        ns: &str,
        resources: &[Resource],
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let loaded = atrest::config::load(&self.config_path)
            .unwrap_or_else(|e| panic!("the config on disk: {e}"));
        let mut etcd = self.etcd().await;
        let mut out = BTreeMap::new();
        for r in resources {
            let resolved = loaded.config.resolve(&r.group_resource());
            let kms = resolved
                .entries
                .iter()
                .any(|e| matches!(e.provider, atrest::config::Provider::Kms(_)));
            if kms {
                // Opening needs the plugin: compared through the API only.
                return None;
            }
            let table = atrest::codec::ProviderTable::new(&resolved);
            let prefix = r.etcd_prefix(ns);
            let resp = etcd
                .get(
                    prefix.as_str(),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let opened = table.open(kv.key(), kv.value()).unwrap_or_else(|| {
                    panic!("{key}: no key of the config on disk opens the stored value")
                });
                out.insert(key, opened.to_vec());
            }
        }
        Some(out)
    }
}

/// Seeds `n` secrets and `n` configmaps in `ns` that use every field a rewrite must keep:
/// labels, annotations, an owner reference (to the namespace, which the garbage collector
/// keeps), a finalizer, a custom type, `immutable` on every other one, binary data, and values
/// of every length (1 byte to 4 KiB). Every value is registered with the leak check.
pub async fn create_rich_objects(client: &kube::Client, ns: &str, n: usize) {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
    use kube::Api;
    let owner = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    let owner_ref = json!([{
        "apiVersion": "v1", "kind": "Namespace",
        "name": ns, "uid": owner.metadata.uid.unwrap(),
    }]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    use base64::Engine as _;
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    for i in 0..n {
        let value = crate::fixtures::seeded_value(ns, i);
        let short = format!("{}", i % 10);
        let meta = |kind: &str| {
            json!({
                "name": format!("rich-{kind}-{i}"),
                "labels": {"app.kubernetes.io/name": "rich", "index": i.to_string()},
                "annotations": {"atrest.test/note": format!("kept {i}"), "atrest.test/empty": ""},
                "ownerReferences": owner_ref,
                "finalizers": ["atrest.test/keep"],
            })
        };
        let secret = json!({
            "metadata": meta("secret"),
            "type": "atrest.test/rich",
            "immutable": i % 2 == 0,
            "data": {
                "value": b64(value.as_bytes()),
                "short": b64(short.as_bytes()),
                "binary": b64([0, 159, 146, 150, 255, i as u8].as_slice()),
                "empty": "",
            },
        });
        secrets
            .create(
                &Default::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("create rich secret {i}: {e}"));
        let cm = json!({
            "metadata": meta("configmap"),
            "immutable": i % 2 == 1,
            "data": {"value": value, "short": short},
            "binaryData": {"blob": b64([1, 2, 3, 0, 255, i as u8].as_slice())},
        });
        cms.create(&Default::default(), &serde_json::from_value(cm).unwrap())
            .await
            .unwrap_or_else(|e| panic!("create rich configmap {i}: {e}"));
        leak::register_value(&value);
    }
}
