//! StorageVersionMigration (`storagemigration.k8s.io/v1`, stable and served by default from
//! Kubernetes 1.37): an object that asks kube-controller-manager's storage version migrator to
//! rewrite every object of one resource through the apiserver's storage layer. This module only
//! speaks the API: find out whether it is served, list, create, read and delete migrations.
//! Deciding when to use it is [`crate::migrate::svm`]'s.

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::{Api, KubeError};
use crate::GroupResource;

/// The API group atrest drives.
pub const GROUP: &str = "storagemigration.k8s.io";
/// The only version atrest drives: the stable one.
pub const VERSION: &str = "v1";
/// The label atrest puts on the migrations it creates; it deletes only those.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "atrest");

const COLLECTION: &str = "/apis/storagemigration.k8s.io/v1/storageversionmigrations";

/// Whether the apiserver serves the API atrest drives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "served", rename_all = "snake_case")]
pub enum Served {
    /// `storagemigration.k8s.io/v1` is served.
    Yes,
    /// The group is served, but only in these versions (a beta on 1.35–1.36 with the gate).
    OtherVersions {
        /// The versions served.
        versions: Vec<String>,
    },
    /// The group is not served (1.34–1.36 without the `StorageVersionMigrator` gate, or the
    /// API turned off with `--runtime-config`).
    No,
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Yes => write!(f, "served ({GROUP}/{VERSION})"),
            Served::OtherVersions { versions } => write!(
                f,
                "not served in {VERSION}: {GROUP} serves only {} (atrest drives the stable {VERSION}, Kubernetes 1.37 and later)",
                versions.join(", ")
            ),
            Served::No => write!(
                f,
                "not served: the apiserver has no {GROUP} API (Kubernetes 1.34-1.36 without the StorageVersionMigrator feature gate, or turned off by --runtime-config)"
            ),
        }
    }
}

/// Asks discovery whether `storagemigration.k8s.io/v1` is served.
pub async fn served(api: &Api) -> Result<Served, KubeError> {
    let (status, body) = api.get_text(&format!("/apis/{GROUP}")).await?;
    if status == 404 {
        return Ok(Served::No);
    }
    if status != 200 {
        return Err(KubeError::Request {
            url: api.url.clone(),
            message: format!("GET /apis/{GROUP} answered {status}: {}", body.trim()),
        });
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| KubeError::Request {
        url: api.url.clone(),
        message: format!("GET /apis/{GROUP}: {e}"),
    })?;
    let versions = super::group_versions(&v);
    Ok(if versions.iter().any(|x| x == VERSION) {
        Served::Yes
    } else if versions.is_empty() {
        Served::No
    } else {
        Served::OtherVersions { versions }
    })
}

/// Where a migration stands, from its conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "snake_case")]
pub enum Phase {
    /// No controller has picked it up yet (no `status.resourceVersion`).
    Pending,
    /// The controller has seen it (`status.resourceVersion` set) but not started rewriting.
    Seen,
    /// Condition `Running` is true.
    Running,
    /// Condition `Succeeded` is true.
    Succeeded,
    /// Condition `Failed` is true, with its message.
    Failed(String),
}

impl Phase {
    /// Succeeded or failed: the controller will not touch it again.
    pub fn finished(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed(_))
    }
}

/// One StorageVersionMigration as atrest reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// `metadata.name`.
    pub name: String,
    /// `spec.resource`.
    pub resource: GroupResource,
    /// Carries atrest's [`MANAGED_BY`] label.
    pub created_by_atrest: bool,
    /// Where it stands.
    pub phase: Phase,
}

#[derive(Deserialize)]
struct Wire {
    metadata: WireMeta,
    #[serde(default)]
    spec: WireSpec,
    #[serde(default)]
    status: WireStatus,
}

#[derive(Deserialize)]
struct WireMeta {
    name: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct WireSpec {
    #[serde(default)]
    resource: WireResource,
}

#[derive(Default, Deserialize)]
struct WireResource {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    #[serde(default)]
    conditions: Vec<WireCondition>,
    #[serde(default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct WireCondition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

impl From<Wire> for Migration {
    fn from(w: Wire) -> Self {
        let is_true = |t: &str| {
            w.status
                .conditions
                .iter()
                .find(|c| c.kind == t && c.status == "True")
        };
        let phase = if let Some(c) = is_true("Failed") {
            let why = if c.message.is_empty() {
                &c.reason
            } else {
                &c.message
            };
            Phase::Failed(why.clone())
        } else if is_true("Succeeded").is_some() {
            Phase::Succeeded
        } else if is_true("Running").is_some() {
            Phase::Running
        } else if !w.status.resource_version.is_empty() {
            Phase::Seen
        } else {
            Phase::Pending
        };
        Migration {
            created_by_atrest: w.metadata.labels.get(MANAGED_BY.0).map(String::as_str)
                == Some(MANAGED_BY.1),
            name: w.metadata.name,
            resource: GroupResource::new(&w.spec.resource.group, &w.spec.resource.resource),
            phase,
        }
    }
}

async fn send(
    api: &Api,
    method: http::Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), KubeError> {
    let err = |e: &dyn std::fmt::Display| KubeError::Request {
        url: api.url.clone(),
        message: format!("{method} {path}: {e}"),
    };
    let mut req = http::Request::builder().method(method.clone()).uri(path);
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(kube::client::Body::from(
            body.unwrap_or_default().into_bytes(),
        ))
        .map_err(|e| err(&e))?;
    let resp = api.client.send(req).await.map_err(|e| err(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn refused(api: &Api, what: &str, status: u16, body: &str) -> KubeError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    KubeError::Request {
        url: api.url.clone(),
        message: format!("{what} answered {status}: {message}"),
    }
}

fn parse(api: &Api, what: &str, body: &str) -> Result<Wire, KubeError> {
    serde_json::from_str(body).map_err(|e| KubeError::Request {
        url: api.url.clone(),
        message: format!("{what}: not a StorageVersionMigration: {e}"),
    })
}

/// Every StorageVersionMigration in the cluster.
pub async fn list(api: &Api) -> Result<Vec<Migration>, KubeError> {
    let (status, body) = send(api, http::Method::GET, COLLECTION, None).await?;
    if status != 200 {
        return Err(refused(
            api,
            "listing StorageVersionMigrations",
            status,
            &body,
        ));
    }
    #[derive(Deserialize)]
    struct List {
        #[serde(default)]
        items: Vec<Wire>,
    }
    let list: List = serde_json::from_str(&body).map_err(|e| KubeError::Request {
        url: api.url.clone(),
        message: format!("listing StorageVersionMigrations: {e}"),
    })?;
    Ok(list.items.into_iter().map(Migration::from).collect())
}

/// Creates a migration of `resource`, named `atrest-<resource>-` plus a suffix the apiserver
/// picks, labelled [`MANAGED_BY`].
pub async fn create(api: &Api, resource: &GroupResource) -> Result<Migration, KubeError> {
    let mut prefix = format!("atrest-{}", resource.resource);
    if !resource.group.is_empty() {
        prefix.push('.');
        prefix.push_str(&resource.group);
    }
    // Names are DNS subdomains of at most 253 characters; the apiserver adds 5.
    prefix.truncate(200);
    prefix.push('-');
    let body = serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "StorageVersionMigration",
        "metadata": {
            "generateName": prefix,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
        },
        "spec": { "resource": { "group": resource.group, "resource": resource.resource } },
    })
    .to_string();
    let what = format!("creating a StorageVersionMigration of {resource}");
    let (status, text) = send(api, http::Method::POST, COLLECTION, Some(body)).await?;
    if status != 201 && status != 200 {
        return Err(refused(api, &what, status, &text));
    }
    Ok(parse(api, &what, &text)?.into())
}

/// Reads one migration; `None` once it is gone.
pub async fn get(api: &Api, name: &str) -> Result<Option<Migration>, KubeError> {
    let path = format!("{COLLECTION}/{name}");
    let (status, body) = send(api, http::Method::GET, &path, None).await?;
    match status {
        200 => Ok(Some(parse(api, &path, &body)?.into())),
        404 => Ok(None),
        _ => Err(refused(api, &format!("GET {path}"), status, &body)),
    }
}

/// Deletes one migration (gone already is fine).
pub async fn delete(api: &Api, name: &str) -> Result<(), KubeError> {
    let path = format!("{COLLECTION}/{name}");
    let (status, body) = send(api, http::Method::DELETE, &path, None).await?;
    match status {
        200 | 202 | 404 => Ok(()),
        _ => Err(refused(api, &format!("DELETE {path}"), status, &body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: serde_json::Value) -> Migration {
        serde_json::from_value::<Wire>(json).unwrap().into()
    }

    #[test]
    fn conditions_decide_the_phase_and_the_label_the_owner() {
        let base = |status: serde_json::Value, labels: serde_json::Value| {
            serde_json::json!({
                "metadata": {"name": "m", "labels": labels},
                "spec": {"resource": {"group": "", "resource": "secrets"}},
                "status": status,
            })
        };
        let atrest = serde_json::json!({"app.kubernetes.io/managed-by": "atrest"});
        let m = wire(base(serde_json::json!({}), atrest.clone()));
        assert_eq!((m.phase, m.created_by_atrest), (Phase::Pending, true));
        assert_eq!(m.resource, GroupResource::secrets());
        let m = wire(base(
            serde_json::json!({"resourceVersion": "12"}),
            serde_json::json!({}),
        ));
        assert_eq!((m.phase, m.created_by_atrest), (Phase::Seen, false));
        let running = serde_json::json!({"type": "Running", "status": "True"});
        let m = wire(base(
            serde_json::json!({"resourceVersion": "12", "conditions": [running]}),
            atrest.clone(),
        ));
        assert_eq!(m.phase, Phase::Running);
        let done = serde_json::json!({"type": "Succeeded", "status": "True"});
        let not_running = serde_json::json!({"type": "Running", "status": "False"});
        let m = wire(base(
            serde_json::json!({"resourceVersion": "12", "conditions": [not_running, done]}),
            atrest.clone(),
        ));
        assert!(m.phase.finished() && m.phase == Phase::Succeeded);
        let failed = serde_json::json!({"type": "Failed", "status": "True", "reason": "StorageVersionMigrationFailed", "message": "resource not found"});
        let m = wire(base(
            serde_json::json!({"resourceVersion": "12", "conditions": [failed]}),
            atrest,
        ));
        assert_eq!(m.phase, Phase::Failed("resource not found".into()));
    }
}
