//! TLS material of the test bed: one CA and serving certificate for every apiserver, and etcd's
//! CA, server and client certificates (all files in the test folder, mode 0600).

use std::path::{Path, PathBuf};

use crate::files::write_private;

/// etcd TLS material (files in the test folder).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA that signed etcd's server and client certificates.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
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

/// The etcd CA's certificate parameters (its name and CA flag: what signing needs).
fn etcd_ca_params() -> rcgen::CertificateParams {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-etcd-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
}

/// A client certificate and key (PEM) for etcd, signed by the test bed's etcd CA (its key in
/// `ca_key`), valid from `not_before` to `not_after` (year, month, day).
pub fn etcd_client_cert(
    ca_key: &Path,
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
    let issuer = rcgen::Issuer::new(etcd_ca_params(), ca_key);
    let not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    let not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-etcd-client");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = not_before;
    p.not_after = not_after;
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, an etcd serving certificate for 127.0.0.1, and a client certificate.
pub fn make_etcd_tls(d: &Path) -> EtcdTls {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = etcd_ca_params();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_key_pem = ca_key.serialize_pem();
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
        // For tests that issue more client certificates (an expired one).
        ("etcd-ca.key", ca_key_pem),
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
