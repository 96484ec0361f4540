//! Signed evidence: an in-toto Statement v1 whose subjects are the report files (sha256) and
//! whose predicate is the in-toto test-result predicate, in a DSSE envelope signed with an
//! Ed25519 key ([`crate::keys::signing`]). Anyone with the public key verifies it offline —
//! with `atrest report verify` or with the in-toto / securesystemslib tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::{Report, Status};
use crate::keys::signing::{PublicKey, SigningKey};

/// The DSSE payload type of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto Statement v1 type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The in-toto test-result predicate.
pub const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";
/// What an envelope file's name ends with, beside the report it signs.
pub const ENVELOPE_SUFFIX: &str = ".intoto.json";

/// A DSSE envelope (`payload` base64).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The statement's JSON, base64.
    pub payload: String,
    /// [`PAYLOAD_TYPE`].
    pub payload_type: String,
    /// One signature per key.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvelopeSignature {
    /// The signing key's ID, as securesystemslib computes it.
    pub keyid: String,
    /// The Ed25519 signature of the envelope's PAE, base64.
    pub sig: String,
}

/// An in-toto Statement v1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The files it speaks for.
    pub subject: Vec<Subject>,
    /// [`TEST_RESULT`].
    pub predicate_type: String,
    /// The test-result predicate.
    pub predicate: serde_json::Value,
}

/// A file a statement speaks for, by name and digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    /// The file's name, relative to the envelope's folder.
    pub name: String,
    /// `sha256` → hex.
    pub digest: BTreeMap<String, String>,
}

/// Why evidence could not be signed or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The envelope is not a DSSE envelope of an in-toto statement.
    #[error("{path} is not a DSSE envelope of an in-toto statement: {message}")]
    Malformed {
        /// The envelope.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No signature of the envelope verifies with the key given.
    #[error(
        "{path}: the signature does not verify with the key given ({key_id}): the envelope was changed or signed with another key"
    )]
    BadSignature {
        /// The envelope.
        path: PathBuf,
        /// The key tried.
        key_id: String,
    },
    /// A subject file is missing or its digest differs.
    #[error("{file}: {problem} (the envelope {envelope} was signed for sha256 {expected})")]
    Subject {
        /// The envelope.
        envelope: PathBuf,
        /// The subject file.
        file: PathBuf,
        /// `missing` or `changed: sha256 …`.
        problem: String,
        /// The digest signed.
        expected: String,
    },
}

/// DSSE's pre-authentication encoding: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The test-result predicate of a report: PASSED/WARNED/FAILED, the check IDs by outcome, and
/// what the result was reached with (atrest version, config hash, etcd revision, policy).
pub fn test_result(report: &Report) -> serde_json::Value {
    let ids = |s: Status| -> Vec<&str> {
        report
            .checks
            .iter()
            .filter(|c| c.status == s)
            .map(|c| c.id.as_str())
            .collect()
    };
    let result = match (report.outcome, report.warnings) {
        (Status::Fail, _) => "FAILED",
        (_, 0) => "PASSED",
        _ => "WARNED",
    };
    let policy = serde_json::to_vec(&report.policy).unwrap_or_default();
    serde_json::json!({
        "result": result,
        "configuration": [
            {"name": "atrest", "annotations": {"version": report.atrest_version}},
            {
                "name": report.config.path,
                "digest": {"sha256": report.config.sha256.trim_start_matches("sha256:")},
            },
            {
                "name": "etcd",
                "annotations": {
                    "clusterId": report.etcd.cluster_id,
                    "revision": report.etcd.revision,
                },
            },
            {"name": "policy", "digest": {"sha256": sha256_hex(&policy)}},
        ],
        "passedTests": ids(Status::Pass),
        "warnedTests": ids(Status::Warn),
        "failedTests": ids(Status::Fail),
    })
}

/// Signs `files` (report files, named relative to `dir`) with `key`: the envelope to write in
/// `dir`.
pub fn sign(
    report: &Report,
    dir: &Path,
    files: &[PathBuf],
    key: &SigningKey,
) -> Result<Envelope, AttestError> {
    let mut subject = Vec::new();
    for f in files {
        let path = dir.join(f);
        let bytes = std::fs::read(&path).map_err(|source| AttestError::Read { path, source })?;
        subject.push(Subject {
            name: f.display().to_string(),
            digest: BTreeMap::from([("sha256".to_string(), sha256_hex(&bytes))]),
        });
    }
    let statement = Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject,
        predicate_type: TEST_RESULT.into(),
        predicate: test_result(report),
    };
    let payload = serde_json::to_vec(&statement).unwrap_or_default();
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
    Ok(Envelope {
        payload: B64.encode(&payload),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![EnvelopeSignature {
            keyid: key.public().key_id(),
            sig: B64.encode(sig),
        }],
    })
}

/// Verifies the envelope at `path` with `key`, then every subject file (relative to the
/// envelope's folder) against its digest; the statement when all hold.
pub fn verify(path: &Path, key: &PublicKey) -> Result<Statement, AttestError> {
    let malformed = |message: String| AttestError::Malformed {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read(path).map_err(|source| AttestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let env: Envelope = serde_json::from_slice(&text).map_err(|e| malformed(e.to_string()))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(malformed(format!(
            "payloadType {:?}, expected {PAYLOAD_TYPE:?}",
            env.payload_type
        )));
    }
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| malformed(format!("payload: {e}")))?;
    let signed = pae(&env.payload_type, &payload);
    let verified = env.signatures.iter().any(|s| {
        B64.decode(&s.sig)
            .is_ok_and(|sig| key.verifies(&signed, &sig))
    });
    if !verified {
        return Err(AttestError::BadSignature {
            path: path.to_path_buf(),
            key_id: key.key_id(),
        });
    }
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| malformed(format!("statement: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for s in &statement.subject {
        let expected = s.digest.get("sha256").cloned().unwrap_or_default();
        let file = dir.join(&s.name);
        let problem = match std::fs::read(&file) {
            Err(_) => Some("missing".to_string()),
            Ok(bytes) => {
                let found = sha256_hex(&bytes);
                (found != expected).then(|| format!("changed: its sha256 is now {found}"))
            }
        };
        if let Some(problem) = problem {
            return Err(AttestError::Subject {
                envelope: path.to_path_buf(),
                file,
                problem,
                expected,
            });
        }
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
