//! A real admission webhook: an HTTPS server on loopback (a CA of its own, given to the
//! apiserver as the caBundle) that denies every AdmissionReview it is sent, and the
//! ValidatingWebhookConfiguration that sends it the UPDATEs of secrets in one namespace. The
//! apiserver calls it exactly as it would call a policy engine on a real cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running webhook server and its configuration in the cluster; the server stops on drop.
pub struct DenyingWebhook {
    /// The webhook's name in its configuration (what the apiserver quotes).
    pub name: String,
    /// AdmissionReviews answered so far.
    pub reviews: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DenyingWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DenyingWebhook {
    /// Starts the server and registers `name` for UPDATEs of secrets in `namespace`, denying
    /// each with `message`.
    pub async fn install(
        client: &kube::Client,
        name: &str,
        namespace: &str,
        message: &str,
    ) -> DenyingWebhook {
        let (ca_pem, config) = serving_config();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reviews = Arc::new(AtomicU64::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (count, message) = (reviews.clone(), message.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, count, message) = (acceptor.clone(), count.clone(), message.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &count, &message).await;
                    }
                });
            }
        });
        use base64::Engine;
        let body: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "webhooks": [{
                "name": name,
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca_pem),
                },
                "rules": [{
                    "operations": ["UPDATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["secrets"],
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }],
        }))
        .unwrap();
        let api: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
        api.create(&Default::default(), &body).await.unwrap();
        DenyingWebhook {
            name: name.to_string(),
            reviews,
            task,
        }
    }

    /// Removes the configuration (the apiserver stops calling the server).
    pub async fn uninstall(&self, client: &kube::Client) {
        let api: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
        api.delete(&self.name, &Default::default()).await.unwrap();
    }

    /// Reviews answered so far.
    pub fn reviews(&self) -> u64 {
        self.reviews.load(Ordering::SeqCst)
    }
}

/// A CA (PEM, for the caBundle) and a server config for 127.0.0.1 signed by it.
fn serving_config() -> (Vec<u8>, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-webhook-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-webhook");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem().into_bytes(), config)
}

/// Answers HTTP/1.1 requests on one connection until it closes: each body is an AdmissionReview,
/// each answer denies it.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut conn: S,
    count: &AtomicU64,
    message: &str,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let review: serde_json::Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
        buf.drain(..head_end + length);
        count.fetch_add(1, Ordering::SeqCst);
        let answer = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": review["request"]["uid"],
                "allowed": false,
                "status": {"code": 403, "message": message},
            },
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if conn.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
