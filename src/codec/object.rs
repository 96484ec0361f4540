//! What a decrypted (or plaintext) stored value is: its serialization, and its metadata.
//! Secret data is never decoded: map values are skipped, only their count is kept.

use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;

/// `k8s\x00`: the apiserver's protobuf envelope.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\x00";
/// CBOR self-describe tag, used for custom resources under the CBOR feature gate.
pub const CBOR_MAGIC: &[u8] = &[0xd9, 0xd9, 0xf7];

/// How a plaintext object is serialized, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// The apiserver's protobuf envelope (`k8s\x00`): built-in resources by default.
    Protobuf,
    /// JSON: custom resources, and objects written before protobuf storage.
    Json,
    /// CBOR: custom resources when the CBOR storage feature gate is on.
    Cbor,
    /// None of those: not an object as an apiserver writes it.
    Unknown,
}

/// Tells the serialization from the first bytes only; it does not parse the object.
pub fn payload_kind(plaintext: &[u8]) -> PayloadKind {
    if plaintext.starts_with(PROTOBUF_MAGIC) {
        PayloadKind::Protobuf
    } else if plaintext.first() == Some(&b'{') {
        PayloadKind::Json
    } else if plaintext.starts_with(CBOR_MAGIC) {
        PayloadKind::Cbor
    } else {
        PayloadKind::Unknown
    }
}

/// An object's identity, without any of its data.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// `apiVersion`, as stored (`v1`).
    pub api_version: Option<String>,
    /// `kind`, as stored (`Secret`).
    pub kind: Option<String>,
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace`; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.uid`: a rewrite sends it as a precondition, so a recreated object is never
    /// rewritten by mistake.
    pub uid: Option<String>,
    /// RFC 3339, seconds precision, as Kubernetes stores it.
    pub creation_timestamp: Option<String>,
    /// Secrets only.
    pub secret_type: Option<String>,
    /// Secrets only: how many keys `data` has.
    pub data_keys: Option<usize>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectView {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// A map entry with its value skipped.
#[derive(Clone, PartialEq, Message)]
struct KeyOnly {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct SecretView {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    data: Vec<KeyOnly>,
    #[prost(string, optional, tag = "3")]
    secret_type: Option<String>,
}

/// Decodes metadata from a protobuf or JSON payload; `None` when it is neither or malformed.
pub fn object_info(plaintext: &[u8]) -> Option<ObjectInfo> {
    match payload_kind(plaintext) {
        PayloadKind::Protobuf => protobuf_info(&plaintext[PROTOBUF_MAGIC.len()..]),
        PayloadKind::Json => json_info(plaintext),
        _ => None,
    }
}

fn protobuf_info(envelope: &[u8]) -> Option<ObjectInfo> {
    let unknown = Unknown::decode(envelope).ok()?;
    let tm = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut info = ObjectInfo {
        api_version: tm.api_version,
        kind: tm.kind,
        ..Default::default()
    };
    let meta = if info.kind.as_deref() == Some("Secret") {
        let s = SecretView::decode(raw.as_slice()).ok()?;
        info.secret_type = s.secret_type;
        info.data_keys = Some(s.data.len());
        s.metadata
    } else {
        ObjectView::decode(raw.as_slice()).ok()?.metadata
    };
    if let Some(m) = meta {
        info.name = m.name;
        info.namespace = m.namespace;
        info.uid = m.uid;
        info.creation_timestamp = m
            .creation_timestamp
            .and_then(|t| t.seconds)
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    Some(info)
}

#[derive(serde::Deserialize)]
struct JsonObject {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: JsonMeta,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    data: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Default, serde::Deserialize)]
struct JsonMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    #[serde(rename = "creationTimestamp")]
    creation_timestamp: Option<String>,
}

fn json_info(plaintext: &[u8]) -> Option<ObjectInfo> {
    let o: JsonObject = serde_json::from_slice(plaintext).ok()?;
    let is_secret = o.kind.as_deref() == Some("Secret");
    Some(ObjectInfo {
        api_version: o.api_version,
        kind: o.kind,
        name: o.metadata.name,
        namespace: o.metadata.namespace,
        uid: o.metadata.uid,
        creation_timestamp: o.metadata.creation_timestamp,
        secret_type: if is_secret { o.secret_type } else { None },
        data_keys: if is_secret {
            o.data.map(|d| d.len())
        } else {
            None
        },
    })
}

/// `metadata.resourceVersion` of an apiserver response in the protobuf envelope (responses
/// carry it; stored values never do).
pub fn response_resource_version(body: &[u8]) -> Option<String> {
    let unknown = Unknown::decode(body.strip_prefix(PROTOBUF_MAGIC)?).ok()?;
    ObjectView::decode(unknown.raw?.as_slice())
        .ok()?
        .metadata?
        .resource_version
}

/// The message of a `Status` error response in the protobuf envelope.
pub fn response_status_message(body: &[u8]) -> Option<String> {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::Status;
    let unknown = Unknown::decode(body.strip_prefix(PROTOBUF_MAGIC)?).ok()?;
    Status::decode(unknown.raw?.as_slice()).ok()?.message
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::core::v1::Secret;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    #[test]
    fn decodes_secret_metadata_without_data() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                uid: Some("1234".into()),
                creation_timestamp: Some(Time {
                    seconds: Some(1_700_000_000),
                    nanos: None,
                }),
                ..Default::default()
            }),
            data: [
                ("password".to_string(), b"hunter2".to_vec()),
                ("user".to_string(), b"me".to_vec()),
            ]
            .into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let env = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(secret.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut value = PROTOBUF_MAGIC.to_vec();
        value.extend(env.encode_to_vec());
        assert_eq!(payload_kind(&value), PayloadKind::Protobuf);
        let info = object_info(&value).unwrap();
        assert_eq!(info.name.as_deref(), Some("db"));
        assert_eq!(info.namespace.as_deref(), Some("prod"));
        assert_eq!(info.uid.as_deref(), Some("1234"));
        assert_eq!(
            info.creation_timestamp.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(info.secret_type.as_deref(), Some("Opaque"));
        assert_eq!(info.data_keys, Some(2));
        assert!(!format!("{info:?}").contains("hunter2"));
    }

    #[test]
    fn decodes_json_custom_resources() {
        let v = br#"{"apiVersion":"cr.bar.com/v1","kind":"Foo","metadata":{"name":"a","namespace":"n","uid":"u"}}"#;
        let info = object_info(v).unwrap();
        assert_eq!(info.kind.as_deref(), Some("Foo"));
        assert_eq!(info.uid.as_deref(), Some("u"));
        assert_eq!(info.data_keys, None);
        assert_eq!(payload_kind(&[0xd9, 0xd9, 0xf7, 1]), PayloadKind::Cbor);
        assert_eq!(object_info(b"garbage"), None);
    }
}
