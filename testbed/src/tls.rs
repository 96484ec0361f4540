//! TLS material of the test bed: one CA and serving certificate for every apiserver, and etcd's
//! CA, server and client certificates (all files in the test folder, mode 0600).

use std::path::{Path, PathBuf};

use crate::files::write_private;

/// etcd TLS material (files in the test folder).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every certificate of a PEM bundle, as DER (the apiserver's self-signed file holds the
/// serving certificate and its CA).
pub fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            current = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(b64) = current.take() {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                );
            }
        } else if let Some(c) = current.as_mut() {
            c.push_str(line.trim());
        }
    }
    out
}

/// A CA and one serving certificate for every loopback address the test bed uses.
pub fn make_serving_tls(d: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-apiserver-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut names: Vec<String> = (1..=9).map(|i| format!("127.0.0.{i}")).collect();
    names.extend([
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ]);
    let key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(names).unwrap();
    sp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = sp.signed_by(&key, &issuer).unwrap();
    write_private(&d.join("apiserver-ca.crt"), ca.pem().as_bytes());
    write_private(&d.join("apiserver.crt"), cert.pem().as_bytes());
    write_private(&d.join("apiserver.key"), key.serialize_pem().as_bytes());
}

/// A CA, an etcd serving certificate for 127.0.0.1, and a client certificate.
pub fn make_etcd_tls(d: &Path) -> EtcdTls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-etcd-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "etcd");
    sp.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-etcd-client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &issuer).unwrap();

    let files = [
        ("etcd-ca.crt", ca.pem()),
        ("etcd-server.crt", server.pem()),
        ("etcd-server.key", server_key.serialize_pem()),
        ("etcd-client.crt", client.pem()),
        ("etcd-client.key", client_key.serialize_pem()),
    ];
    for (name, text) in files {
        write_private(&d.join(name), text.as_bytes());
    }
    EtcdTls {
        ca: d.join("etcd-ca.crt"),
        cert: d.join("etcd-client.crt"),
        key: d.join("etcd-client.key"),
    }
}
