//! The writes that make the apiserver re-encrypt an object without changing it. The apiserver
//! writes only when the stored value is stale (SPEC §4); a current object is left untouched
//! (proven in the tests). Two paths, both with `metadata.resourceVersion` as the precondition
//! (a concurrent change gives 409, never an overwrite):
//!
//! - **PUT** ([`put`]): the stored protobuf object sent back as it is, with only the
//!   resourceVersion added ([`crate::codec::object::put_body`]); its uid is the stored one. The
//!   apiserver decodes it without converting to JSON and reading the object first, which
//!   makes it the cheaper request. Only for protobuf objects atrest can open without a KMS
//!   plugin, whose stored apiVersion is the one the URL names.
//! - **PATCH** ([`patch`]): a JSON merge patch that carries only `metadata.resourceVersion`
//!   (and `metadata.uid` when known); no field of the object travels. Everything else:
//!   custom resources stored as JSON or CBOR, KMS values, other versions.

use std::time::Duration;

use http_body_util::BodyExt;

use super::{Api, ApiPath};
use crate::codec::object::response_status_message;

/// What the apiserver did with one no-op rewrite.
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
    /// RBAC refused the write.
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

/// Which request rewrote an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// The stored protobuf object, PUT back unchanged.
    Put,
    /// The JSON merge patch of the preconditions only.
    Patch,
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
    let req = http::Request::patch(&url)
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(kube::client::Body::from(body.into_bytes()));
    send(api, req, "PATCH", &url, resource_version).await
}

/// PUTs `body` ([`crate::codec::object::put_body`] of the stored object at
/// `resource_version`) back to the object's URL.
pub async fn put(
    api: &Api,
    path: &ApiPath,
    namespace: Option<&str>,
    name: &str,
    resource_version: i64,
    body: Vec<u8>,
) -> Outcome {
    let url = path.object_url(namespace, name);
    let req = http::Request::put(&url)
        .header(http::header::CONTENT_TYPE, PROTOBUF)
        .body(kube::client::Body::from(body));
    send(api, req, "PUT", &url, resource_version).await
}

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Sends one rewrite and tells what the apiserver did with it.
async fn send(
    api: &Api,
    req: Result<http::Request<kube::client::Body>, http::Error>,
    method: &str,
    url: &str,
    resource_version: i64,
) -> Outcome {
    let mut req = match req {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot build request for {url}: {e}")),
    };
    // Protobuf where the resource has it (cheaper for the apiserver to encode), else JSON.
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/vnd.kubernetes.protobuf, application/json"),
    );
    let resp = match api.writer.send(req).await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                after: None,
                reason: format!("{method} {url}: {e}"),
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
                reason: format!("{method} {url}: reading the response: {e}"),
            };
        }
    };
    outcome(status, after, &bytes, method, url, resource_version)
}

/// What the apiserver's answer to one rewrite (`status`, `Retry-After`, the response `bytes`)
/// says it did.
fn outcome(
    status: u16,
    after: Option<Duration>,
    bytes: &[u8],
    method: &str,
    url: &str,
    resource_version: i64,
) -> Outcome {
    let status_message = || {
        response_status_message(bytes)
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned())
    };
    match status {
        200 => match response_resource_version(bytes).and_then(|v| v.parse::<i64>().ok()) {
            Some(rv) if rv != resource_version => Outcome::Rewritten {
                resource_version: rv,
            },
            Some(_) => Outcome::Unchanged,
            None => Outcome::Failed(format!(
                "{method} {url}: response without a resourceVersion"
            )),
        },
        404 => Outcome::Gone,
        409 => Outcome::Conflict,
        // An admission webhook may refuse with 403 too: that is this object's refusal, not a
        // missing RBAC rule, and it is named.
        _ if admission_webhook(&status_message()).is_some() => {
            let m = status_message();
            Outcome::Failed(match admission_webhook(&m) {
                Some(w) => w.describe(),
                None => m,
            })
        }
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

/// An admission webhook that refused (or failed on) a write: its name and what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRefusal {
    /// The webhook's name in its configuration (`deny.example.com`).
    pub name: String,
    /// Its message.
    pub message: String,
}

impl WebhookRefusal {
    /// The give-up line: the webhook, its message and the fix.
    pub fn describe(&self) -> String {
        format!(
            "refused by admission webhook {:?}: {}; let atrest's unchanged writes through (exempt its user, or the object's namespace, in the webhook's configuration), then run again with --resume",
            self.name, self.message
        )
    }
}

/// The webhook behind an apiserver message such as `admission webhook "deny.example.com"
/// denied the request: updates are frozen` (or `failed calling webhook "…"`).
pub fn admission_webhook(message: &str) -> Option<WebhookRefusal> {
    for marker in ["admission webhook \"", "failed calling webhook \""] {
        if let Some(i) = message.find(marker) {
            let rest = &message[i + marker.len()..];
            let (name, after) = rest.split_once('"')?;
            let reason = after
                .trim_start_matches(|c: char| c == ':' || c.is_whitespace())
                .trim_start_matches("denied the request")
                .trim_start_matches(|c: char| c == ':' || c.is_whitespace());
            return Some(WebhookRefusal {
                name: name.to_string(),
                message: if reason.is_empty() {
                    after.trim().to_string()
                } else {
                    reason.to_string()
                },
            });
        }
    }
    None
}

/// The resourceVersion of a rewrite's response, protobuf or JSON (only metadata is decoded; the
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

#[cfg(test)]
mod webhook_tests {
    use super::*;

    #[test]
    fn webhook_refusals_are_named() {
        let w = admission_webhook(
            "admission webhook \"deny.atrest.test\" denied the request: updates in guarded are frozen",
        )
        .unwrap();
        assert_eq!(w.name, "deny.atrest.test");
        assert_eq!(w.message, "updates in guarded are frozen");
        assert!(
            w.describe()
                .contains("refused by admission webhook \"deny.atrest.test\"")
        );
        let w = admission_webhook(
            "Internal error occurred: failed calling webhook \"hook.example.com\": context deadline exceeded",
        )
        .unwrap();
        assert_eq!(w.name, "hook.example.com");
        assert_eq!(w.message, "context deadline exceeded");
        assert!(admission_webhook("secrets \"x\" is forbidden: User cannot patch").is_none());
    }
}
