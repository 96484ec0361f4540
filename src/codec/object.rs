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

/// The body of an unchanged protobuf PUT of a stored object: the stored bytes with
/// `metadata.resourceVersion` (which storage never holds) set to `resource_version`, and the
/// `apiVersion` they are in (a PUT must name the URL's version). Every other byte of the object
/// is copied, never decoded and re-encoded, so no field (one this build does not know
/// included) can be lost. `None` for anything but a protobuf object with no (or an empty)
/// resourceVersion.
pub fn put_body(plaintext: &[u8], resource_version: i64) -> Option<(String, Vec<u8>)> {
    let unknown = Unknown::decode(plaintext.strip_prefix(PROTOBUF_MAGIC)?).ok()?;
    let api_version = unknown.type_meta.as_ref()?.api_version.clone()?;
    // `metadata` is field 1 of every Kubernetes object, `resourceVersion` field 6 of it. The
    // apiserver's encoder writes every string field, so storage holds an empty one.
    let raw = replace_field(unknown.raw.as_deref()?, 1, false, |meta| {
        replace_field(meta, 6, true, |rv| {
            rv.is_empty()
                .then(|| resource_version.to_string().into_bytes())
        })
    })?;
    let mut body = PROTOBUF_MAGIC.to_vec();
    Unknown {
        raw: Some(raw),
        ..unknown
    }
    .encode(&mut body)
    .ok()?;
    Some((api_version, body))
}

/// `message` with the first length-delimited field `tag` replaced by `f(its bytes)` (when
/// absent: appended as `f(&[])` if `add`, else `None`); every other byte copied as it is.
/// `None` when the message does not parse or `f` refuses.
fn replace_field(
    message: &[u8],
    tag: u32,
    add: bool,
    f: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    };
    let mut f = Some(f);
    let mut rest = message;
    let mut out = Vec::with_capacity(message.len() + 24);
    while !rest.is_empty() {
        let start = rest;
        let (t, wire) = decode_key(&mut rest).ok()?;
        let len = match wire {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let body = rest.get(..len)?;
        rest = &rest[len..];
        match (t == tag && wire == WireType::LengthDelimited, f.take()) {
            (true, Some(f)) => put(&mut out, &f(body)?),
            (_, f_back) => {
                f = f_back;
                out.extend_from_slice(&start[..start.len() - rest.len()]);
            }
        }
    }
    if let Some(f) = f {
        if !add {
            return None;
        }
        put(&mut out, &f(&[])?);
    }
    Some(out)
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

    /// A stored Secret in the envelope, with a field this build does not know (tag 99).
    fn stored_secret() -> Vec<u8> {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let mut raw = secret.encode_to_vec();
        prost::encoding::string::encode(99, &"from a newer release".to_string(), &mut raw);
        let mut v = PROTOBUF_MAGIC.to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode(&mut v)
        .unwrap();
        v
    }

    #[test]
    fn put_body_adds_only_the_resource_version() {
        let stored = stored_secret();
        let (api_version, body) = put_body(&stored, 4242).unwrap();
        assert_eq!(api_version, "v1");
        let sent = Unknown::decode(body.strip_prefix(PROTOBUF_MAGIC).unwrap()).unwrap();
        let orig = Unknown::decode(stored.strip_prefix(PROTOBUF_MAGIC).unwrap()).unwrap();
        assert_eq!(sent.type_meta, orig.type_meta);
        let secret = Secret::decode(sent.raw.as_deref().unwrap()).unwrap();
        let meta = secret.metadata.clone().unwrap();
        assert_eq!(meta.resource_version.as_deref(), Some("4242"));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(secret.data["password"], b"hunter2");
        // Every other byte is the stored one: the unknown field 99 travels unchanged.
        let (sent_raw, orig_raw) = (sent.raw.unwrap(), orig.raw.unwrap());
        let tail = |raw: &[u8]| raw[raw.len() - 22..].to_vec();
        assert_eq!(tail(&sent_raw), tail(&orig_raw));
        assert_eq!(sent_raw.len(), orig_raw.len() + 6);
    }

    #[test]
    fn put_body_fills_the_empty_resource_version_storage_holds_in_place() {
        // The apiserver's encoder writes empty strings: storage holds `resourceVersion: ""`.
        let mut stored =
            Unknown::decode(stored_secret().strip_prefix(PROTOBUF_MAGIC).unwrap()).unwrap();
        let mut secret = Secret::decode(stored.raw.as_deref().unwrap()).unwrap();
        secret.metadata.as_mut().unwrap().resource_version = Some(String::new());
        stored.raw = Some(secret.encode_to_vec());
        let mut v = PROTOBUF_MAGIC.to_vec();
        stored.encode(&mut v).unwrap();
        let (_, body) = put_body(&v, 31).unwrap();
        let sent = Unknown::decode(body.strip_prefix(PROTOBUF_MAGIC).unwrap()).unwrap();
        let raw = sent.raw.unwrap();
        let sent = Secret::decode(raw.as_slice()).unwrap();
        assert_eq!(
            sent.metadata.unwrap().resource_version.as_deref(),
            Some("31")
        );
        // Replaced, not added: "31" is 2 bytes longer than "", nothing else grew.
        assert_eq!(raw.len(), stored.raw.unwrap().len() + 2);
    }

    #[test]
    fn put_body_refuses_what_storage_never_holds() {
        assert_eq!(put_body(b"{\"kind\":\"Secret\"}", 1), None);
        assert_eq!(put_body(b"k8s\x00\xff\xff", 1), None);
        // An object that already carries a resourceVersion.
        let (_, body) = put_body(&stored_secret(), 7).unwrap();
        assert_eq!(put_body(&body, 8), None);
        // No metadata.
        let mut v = PROTOBUF_MAGIC.to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(Vec::new()),
            ..Default::default()
        }
        .encode(&mut v)
        .unwrap();
        assert_eq!(put_body(&v, 1), None);
        // No type meta, so no apiVersion to match the URL with.
        let mut v = PROTOBUF_MAGIC.to_vec();
        Unknown {
            raw: Some(Secret::default().encode_to_vec()),
            ..Default::default()
        }
        .encode(&mut v)
        .unwrap();
        assert_eq!(put_body(&v, 1), None);
    }

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
