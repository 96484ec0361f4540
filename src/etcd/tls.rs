//! TLS failures with etcd told apart and named in one sentence: the CA, a certificate's dates
//! or name, a key that does not belong to its certificate, a client certificate etcd refuses.

use std::path::PathBuf;

use super::EtcdTarget;

impl EtcdTarget {
    /// The TLS failure behind `e`, in one sentence naming the file concerned; `None` when it is
    /// not one atrest can name.
    pub(super) fn tls_problem(&self, e: &etcd_client::Error) -> Option<String> {
        let mut chain = format!("{e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(&format!(" {s:?} {s}"));
            source = s.source();
        }
        let file = |p: &Option<PathBuf>, flag: &str| match p {
            Some(p) => format!("{} ({flag})", p.display()),
            None => format!("(no {flag} given)"),
        };
        let ca = file(&self.cacert, "--cacert");
        let cert = file(&self.cert, "--cert");
        let key = file(&self.key, "--key");
        // With TLS 1.3 a client certificate etcd refuses may only be seen as a connection
        // closed after the handshake (how depends on timing): then the files tell why.
        let closed = [
            "BrokenPipe",
            "broken pipe",
            "ConnectionReset",
            "UnexpectedEof",
            "connection closed",
        ]
        .iter()
        .any(|s| chain.contains(s));
        let problem = tls_problem_kind(&chain)
            .or_else(|| closed.then(|| self.client_cert_problem()).flatten())?;
        Some(match problem {
            TlsProblem::UnknownCa => format!(
                "etcd's certificate is not signed by the CA in {ca}; give the CA that signed it (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)"
            ),
            TlsProblem::ServerExpired => "etcd's certificate has expired (or this node's clock is wrong): renew it (kubeadm: `kubeadm certs renew etcd-server`)".to_string(),
            TlsProblem::NotYetValid => "a certificate is not valid yet: check this node's clock".to_string(),
            TlsProblem::WrongName => format!(
                "etcd's certificate is not issued for the name in --endpoints ({}); use a name or address it lists",
                self.describe()
            ),
            TlsProblem::KeyMismatch => format!(
                "the client key {key} does not belong to the client certificate {cert}"
            ),
            TlsProblem::ClientExpired => format!(
                "etcd refused the client certificate {cert}: it has expired (kubeadm: `kubeadm certs renew apiserver-etcd-client`)"
            ),
            TlsProblem::ClientRejected if self.cert.is_none() => "etcd requires a client certificate and none was given: pass --cert/--key (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt and .key)".to_string(),
            TlsProblem::ClientRejected => format!(
                "etcd refused the client certificate {cert}: it is not signed by a CA etcd trusts for clients (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt)"
            ),
        })
    }
}

impl EtcdTarget {
    /// Why etcd would refuse the client certificate, judged from the files: not signed by the
    /// CA in `--cacert` (kubeadm signs etcd's clients with etcd's own CA), or out of its dates.
    fn client_cert_problem(&self) -> Option<TlsProblem> {
        let ca = std::fs::read(self.cacert.as_ref()?).ok()?;
        let cert = std::fs::read(self.cert.as_ref()?).ok()?;
        client_cert_problem(&ca, &cert)
    }
}

fn client_cert_problem(ca_pem: &[u8], cert_pem: &[u8]) -> Option<TlsProblem> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::{CertificateError, Error};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        roots.add(c).ok()?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .ok()?;
    let mut chain = CertificateDer::pem_slice_iter(cert_pem).flatten();
    let end = chain.next()?;
    let intermediates: Vec<_> = chain.collect();
    match verifier.verify_client_cert(&end, &intermediates, UnixTime::now()) {
        Ok(_) => None,
        Err(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => Some(TlsProblem::ClientExpired),
        Err(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => Some(TlsProblem::NotYetValid),
        Err(Error::InvalidCertificate(_)) => Some(TlsProblem::ClientRejected),
        Err(_) => None,
    }
}

/// TLS failures an admin can act on, told apart by what rustls says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsProblem {
    UnknownCa,
    ServerExpired,
    NotYetValid,
    WrongName,
    KeyMismatch,
    ClientExpired,
    ClientRejected,
}

fn tls_problem_kind(chain: &str) -> Option<TlsProblem> {
    let has = |s: &str| chain.contains(s);
    // An alert from etcd reads `AlertReceived(UnknownCA)` or, once hyper has wrapped it,
    // `received fatal alert: UnknownCA`.
    let alert = |a: &str| has(&format!("AlertReceived({a})")) || has(&format!("fatal alert: {a}"));
    Some(
        if has("KeyMismatch") || has("InconsistentKeys") || has("key does not match") {
            TlsProblem::KeyMismatch
        // BadSignature: a CA of the same name that did not sign it (kubeadm names every
        // cluster's etcd CA `etcd-ca`: another cluster's CA file).
        } else if has("UnknownIssuer") || has("InvalidCertificate(BadSignature)") {
            TlsProblem::UnknownCa
        } else if alert("CertificateExpired") {
            TlsProblem::ClientExpired
        } else if alert("UnknownCA")
            || alert("BadCertificate")
            || alert("CertificateRequired")
            || alert("CertificateUnknown")
        {
            TlsProblem::ClientRejected
        } else if has("ExpiredContext") || has("InvalidCertificate(Expired") {
            TlsProblem::ServerExpired
        } else if has("NotValidYet") {
            TlsProblem::NotYetValid
        } else if has("NotValidForName") {
            TlsProblem::WrongName
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::{TlsProblem, tls_problem_kind};

    #[test]
    fn rustls_failures_are_named() {
        for (text, want) in [
            (
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) })",
                TlsProblem::UnknownCa,
            ),
            (
                "InvalidCertificate(ExpiredContext { time: UnixTime(1), not_after: UnixTime(0) })",
                TlsProblem::ServerExpired,
            ),
            (
                "error: InvalidCertificate(BadSignature) })",
                TlsProblem::UnknownCa,
            ),
            (
                "hyper::Error(Io, Custom { kind: InvalidData, error: \"received fatal alert: UnknownCA\" })",
                TlsProblem::ClientRejected,
            ),
            ("InvalidCertificate(NotValidYet)", TlsProblem::NotYetValid),
            ("InvalidCertificate(NotValidForName)", TlsProblem::WrongName),
            ("InconsistentKeys(KeyMismatch)", TlsProblem::KeyMismatch),
            (
                "AlertReceived(CertificateExpired)",
                TlsProblem::ClientExpired,
            ),
            ("AlertReceived(UnknownCA)", TlsProblem::ClientRejected),
            ("AlertReceived(BadCertificate)", TlsProblem::ClientRejected),
        ] {
            assert_eq!(tls_problem_kind(text), Some(want), "{text}");
        }
        assert_eq!(tls_problem_kind("connection refused"), None);
    }
}
