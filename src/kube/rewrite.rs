//! The smallest write that makes the apiserver re-encrypt an object: a JSON merge PATCH that
//! carries only `metadata.resourceVersion` (and `metadata.uid` when known). Both are
//! preconditions, so a concurrent change gives 409 instead of being overwritten, and no field of
//! the object travels in the request, so none can be dropped. The apiserver writes only when the
//! stored value is stale (SPEC §4); a current object is left untouched (proven in the tests).

use std::time::Duration;

use http_body_util::BodyExt;

use super::{Api, ApiPath};

/// What the apiserver did with one no-op PATCH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written again: the resourceVersion moved.
    Rewritten {
        /// The object's new resourceVersion (the etcd revision of the write).
        resource_version: i64,
    },
    /// Accepted without a write: the apiserver did not consider the stored value stale.
    Unchanged,
    /// The object changed since it was read (resourceVersion precondition), or was replaced
    /// by another object of the same name (uid precondition).
    Conflict,
    /// Deleted since it was read.
    Gone,
    /// RBAC refused the PATCH.
    Forbidden(String),
    /// Worth retrying (429, 5xx, connection errors), after `after` when the server said so.
    Retry {
        /// How long the server asked to wait (`Retry-After`), if it did.
        after: Option<Duration>,
        /// What went wrong: the status and message, or the connection error.
        reason: String,
    },
    /// Refused for another reason (admission webhook, validation): not retried.
    Failed(String),
}

/// Sends the no-op PATCH for one object.
pub async fn patch(
    api: &Api,
    path: &ApiPath,
    namespace: Option<&str>,
    name: &str,
    resource_version: i64,
    uid: Option<&str>,
) -> Outcome {
    let mut meta = serde_json::json!({ "resourceVersion": resource_version.to_string() });
    if let Some(uid) = uid {
        meta["uid"] = serde_json::Value::String(uid.to_string());
    }
    let body = serde_json::json!({ "metadata": meta }).to_string();
    let url = path.object_url(namespace, name);
    let req = match http::Request::patch(&url)
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        // Protobuf where the resource has it (cheaper for the apiserver to encode), else JSON.
        .header(
            http::header::ACCEPT,
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .body(kube::client::Body::from(body.into_bytes()))
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot build request for {url}: {e}")),
    };
    let resp = match api.writer.send(req).await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                after: None,
                reason: format!("PATCH {url}: {e}"),
            };
        }
    };
    let status = resp.status().as_u16();
    let after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Outcome::Retry {
                after,
                reason: format!("PATCH {url}: reading the response: {e}"),
            };
        }
    };
    let status_message = || {
        crate::codec::object::response_status_message(&bytes)
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned())
    };
    match status {
        200 => match response_resource_version(&bytes).and_then(|v| v.parse::<i64>().ok()) {
            Some(rv) if rv != resource_version => Outcome::Rewritten {
                resource_version: rv,
            },
            Some(_) => Outcome::Unchanged,
            None => Outcome::Failed(format!("PATCH {url}: response without a resourceVersion")),
        },
        404 => Outcome::Gone,
        409 => Outcome::Conflict,
        403 => Outcome::Forbidden(status_message()),
        // A uid precondition that no longer holds (deleted and recreated under the same name)
        // is refused as an immutable-field change: the object is not the one scanned.
        422 if status_message().contains("metadata.uid") => Outcome::Conflict,
        429 | 500 | 502 | 503 | 504 => Outcome::Retry {
            after,
            reason: format!("{status}: {}", status_message()),
        },
        _ => Outcome::Failed(format!("{status}: {}", status_message())),
    }
}

/// The resourceVersion of a PATCH response, protobuf or JSON (only metadata is decoded; the
/// object's data is skipped).
fn response_resource_version(body: &[u8]) -> Option<String> {
    if let Some(rv) = crate::codec::object::response_resource_version(body) {
        return Some(rv);
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Obj {
        metadata: Meta,
    }
    serde_json::from_slice::<Obj>(body)
        .ok()?
        .metadata
        .resource_version
}
