//! Built-in objects in the protobuf envelope, read on the wire format: only the few fields
//! looked at (ConfigMap data, container env, one annotation) are touched, nothing is copied, and
//! a field this build does not know costs nothing.

use prost::encoding::{WireType, decode_key, decode_varint};

use super::{CONTENT_RULES, Hits, LAST_APPLIED, check_value, raw_scan, secret_name};

/// The length-delimited fields of a message, with their tags; stops at the first malformed byte
/// and says so in `bad`.
struct Fields<'a> {
    rest: &'a [u8],
    bad: bool,
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields {
            rest: message,
            bad: false,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            match next_field(&mut self.rest) {
                Some((tag, Some(body))) => return Some((tag, body)),
                Some((_, None)) => {}
                None => {
                    self.rest = &[];
                    self.bad = true;
                }
            }
        }
        None
    }
}

/// One field: its tag and, when length-delimited, its bytes.
fn next_field<'a>(rest: &mut &'a [u8]) -> Option<(u32, Option<&'a [u8]>)> {
    let (tag, wire) = decode_key(rest).ok()?;
    let len = match wire {
        WireType::Varint => {
            decode_varint(rest).ok()?;
            return Some((tag, None));
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => usize::try_from(decode_varint(rest).ok()?).ok()?,
        WireType::StartGroup | WireType::EndGroup => return None,
    };
    let body = rest.get(..len)?;
    *rest = &rest[len..];
    Some((tag, (wire == WireType::LengthDelimited).then_some(body)))
}

/// The first length-delimited field `tag` (the apiserver writes each once).
fn field(message: &[u8], tag: u32) -> Option<&[u8]> {
    Fields::new(message)
        .find(|&(t, _)| t == tag)
        .map(|(_, b)| b)
}

/// A map entry's key (field 1) and value (field 2); absent ones are empty.
fn entry(body: &[u8]) -> (&[u8], &[u8]) {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    for (tag, b) in Fields::new(body) {
        match tag {
            1 => key = b,
            2 => value = b,
            _ => {}
        }
    }
    (key, value)
}

/// Where a kind keeps its PodSpec: the field tags down to it, and the path that names it.
fn pod_spec_at(kind: &[u8]) -> Option<(&'static [u32], &'static str)> {
    Some(match kind {
        b"Pod" => (&[2], "spec"),
        b"PodTemplate" => (&[2, 2], "template.spec"),
        b"ReplicationController" | b"Deployment" | b"ReplicaSet" | b"StatefulSet" => {
            (&[2, 3, 2], "spec.template.spec")
        }
        b"DaemonSet" => (&[2, 2, 2], "spec.template.spec"),
        b"Job" => (&[2, 6, 2], "spec.template.spec"),
        b"CronJob" => (&[2, 5, 2, 6, 2], "spec.jobTemplate.spec.template.spec"),
        _ => return None,
    })
}

/// Scans a protobuf object (the envelope after `k8s\0`); `false` when the envelope does not
/// parse, so the caller scans the bytes instead.
pub(super) fn scan(envelope: &[u8], triggers: u32, hits: &mut Hits) -> bool {
    let (mut kind, mut raw): (&[u8], Option<&[u8]>) = (&[], None);
    let mut fields = Fields::new(envelope);
    for (tag, body) in fields.by_ref() {
        match tag {
            1 => kind = field(body, 2).unwrap_or_default(),
            2 => raw = Some(body),
            _ => {}
        }
    }
    let Some(raw) = raw.filter(|_| !fields.bad) else {
        return false;
    };
    // What the walk reports at a field path, so the byte scan reports only the rest.
    let mut counted = [0u32; CONTENT_RULES];
    let mut add = |counts: [u32; CONTENT_RULES]| {
        for (c, n) in counted.iter_mut().zip(counts) {
            *c = c.saturating_add(n);
        }
    };
    if let Some(meta) = field(raw, 1) {
        for (_, e) in Fields::new(meta).filter(|&(t, _)| t == 12) {
            let (key, value) = entry(e);
            if key == LAST_APPLIED.as_bytes() {
                add(check_value(hits, value, false, || {
                    format!("metadata.annotations[{LAST_APPLIED}]")
                }));
            }
        }
    }
    if kind == b"ConfigMap" {
        for (tag, e) in Fields::new(raw) {
            let section = match tag {
                2 => "data",
                3 => "binaryData",
                _ => continue,
            };
            let (key, value) = entry(e);
            add(check_value(hits, value, secret_name(key), || {
                format!("{section}.{}", String::from_utf8_lossy(key))
            }));
        }
    } else if let Some((tags, prefix)) = pod_spec_at(kind)
        && let Some(spec) = tags.iter().try_fold(raw, |m, &t| field(m, t))
    {
        pod_spec(spec, prefix, hits, &mut add);
    }
    raw_scan(raw, triggers, &counted, hits);
    true
}

/// Every container's env vars with a literal value: containers, initContainers and
/// ephemeralContainers.
fn pod_spec(
    spec: &[u8],
    prefix: &str,
    hits: &mut Hits,
    add: &mut impl FnMut([u32; CONTENT_RULES]),
) {
    for (tag, c) in Fields::new(spec) {
        let (list, container) = match tag {
            2 => ("containers", Some(c)),
            20 => ("initContainers", Some(c)),
            // EphemeralContainer keeps its Container fields in field 1.
            34 => ("ephemeralContainers", field(c, 1)),
            _ => continue,
        };
        let Some(container) = container else {
            continue;
        };
        let name = field(container, 1).unwrap_or_default();
        for (_, env) in Fields::new(container).filter(|&(t, _)| t == 7) {
            let (env_name, value) = entry(env);
            add(check_value(hits, value, secret_name(env_name), || {
                format!(
                    "{prefix}.{list}[{}].env[{}]",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(env_name)
                )
            }));
        }
    }
}
