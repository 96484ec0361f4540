//! Where a plaintext stored object holds what looks like secret data, for resources the
//! encryption config leaves unencrypted: a password in a ConfigMap is as exposed in etcd as an
//! unencrypted Secret. Only the place (field path) and the rule are reported, never the value,
//! so a report can be shared without spreading what it found.
//!
//! The scan reads every value of every unencrypted resource, so a literal prefilter over the
//! raw bytes decides first whether anything can match; ordinary objects are never decoded.

use std::collections::BTreeSet;

use super::object::{PROTOBUF_MAGIC, PayloadKind, payload_kind};
use crate::GroupResource;
use crate::model::census::Hit;

mod content;
mod json;
mod proto;

use content::{content_counts, triggers};
#[cfg(test)]
mod tests;

/// One rule of the table.
pub struct Rule {
    /// Stable kebab-case name, as reports print it.
    pub name: &'static str,
    /// What it looks for, in one line.
    pub description: &'static str,
}

/// The path of a hit found in an object's bytes rather than in a field it could name.
pub const OBJECT_BYTES: &str = "(object bytes)";

/// Holds the whole object again as JSON, when `kubectl apply` wrote it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Longest path a hit carries, in characters: keys are user data and can be long.
const MAX_PATH: usize = 200;

// Indices into RULES; content rules come first, so a rule's index is also its trigger bit.
const PEM: usize = 0;
const KUBECONFIG: usize = 1;
const JWT: usize = 2;
const AWS: usize = 3;
const GCP: usize = 4;
const AZURE: usize = 5;
const URL: usize = 6;
const GITHUB: usize = 7;
const GITLAB: usize = 8;
const SLACK: usize = 9;
const FIELD_NAME: usize = 10;
const BEARING: usize = 11;
/// How many rules search string content.
const CONTENT_RULES: usize = 10;
/// Their trigger bits.
const CONTENT_MASK: u32 = (1 << CONTENT_RULES) - 1;

/// Every rule, in the order reports list them.
pub const RULES: &[Rule] = &[
    Rule {
        name: "pem-private-key",
        description: "a PEM private key block (RSA, EC, DSA, OpenSSH, PKCS#8, encrypted)",
    },
    Rule {
        name: "kubeconfig-credentials",
        description: "a kubeconfig carrying credentials (client-key-data, or a user's token or password)",
    },
    Rule {
        name: "bearer-token",
        description: "a JSON Web Token (header.payload.signature), as service-account tokens are",
    },
    Rule {
        name: "aws-access-key",
        description: "an AWS access key ID (AKIA/ASIA) or an aws_secret_access_key assignment",
    },
    Rule {
        name: "gcp-service-account-key",
        description: "a GCP service-account key file (type service_account with a private_key)",
    },
    Rule {
        name: "azure-connection-string",
        description: "an Azure connection string with an AccountKey or SharedAccessKey",
    },
    Rule {
        name: "url-credentials",
        description: "a URL with a password in it (scheme://user:password@host)",
    },
    Rule {
        name: "github-token",
        description: "a GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    },
    Rule {
        name: "gitlab-token",
        description: "a GitLab personal access token (glpat-)",
    },
    Rule {
        name: "slack-token",
        description: "a Slack token (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-)",
    },
    Rule {
        name: "field-name",
        description: "a non-empty value under a name such as password, token, apiKey or *_SECRET_KEY",
    },
    Rule {
        name: "secret-bearing-resource",
        description: "a custom resource whose data is secret material by design, with data in it",
    },
];

/// A custom resource whose stored objects hold secret values by design, and where.
struct Bearing {
    group: &'static str,
    resource: &'static str,
    why: &'static str,
    /// Fields that hold the secret values; any non-empty one is reported.
    fields: &'static [&'static [&'static str]],
}

/// Checked against each project's CRDs and docs (code search, 2025): cert-manager's
/// CertificateRequest holds a CSR and the signed certificate (public); Crossplane's
/// ProviderConfig and the external-secrets ExternalSecret, PushSecret and real providers only
/// reference Secrets. The ones below hold the values themselves.
const BEARING_RESOURCES: &[Bearing] = &[
    Bearing {
        // zakkg3/ClusterSecret: v1 keeps Secret `data` at the top level (`data.valueFrom` is a
        // reference, not data); v2 under `spec.template`. Issue #128.
        group: "clustersecret.io",
        resource: "clustersecrets",
        why: "ClusterSecret copies its data into a Secret in every matching namespace",
        fields: &[
            &["data"],
            &["stringData"],
            &["spec", "template", "data"],
            &["spec", "template", "stringData"],
        ],
    },
    Bearing {
        // external-secrets generators.external-secrets.io_fakes.yaml: "lets you define a static
        // set of credentials that is always returned" (spec.data, a string map).
        group: "generators.external-secrets.io",
        resource: "fakes",
        why: "the Fake generator returns its spec.data as secret values",
        fields: &[&["spec", "data"]],
    },
    Bearing {
        // external-secrets fake provider: static key/value pairs in spec.provider.fake.data.
        group: "external-secrets.io",
        resource: "secretstores",
        why: "a SecretStore with the fake provider holds its secret values in spec.provider.fake.data",
        fields: &[&["spec", "provider", "fake", "data"]],
    },
    Bearing {
        group: "external-secrets.io",
        resource: "clustersecretstores",
        why: "a ClusterSecretStore with the fake provider holds its secret values in spec.provider.fake.data",
        fields: &[&["spec", "provider", "fake", "data"]],
    },
];

fn bearing(resource: &GroupResource) -> Option<&'static Bearing> {
    BEARING_RESOURCES
        .iter()
        .find(|b| b.group == resource.group && b.resource == resource.resource)
}

/// Why a custom resource holds secret material by design, when it is one of the well-known ones.
pub fn secret_bearing(resource: &GroupResource) -> Option<&'static str> {
    bearing(resource).map(|b| b.why)
}

/// The places in `plaintext` (a stored value of `resource`) that look like secret data; at most
/// `max` hits, de-duplicated by (path, rule). Never panics on any input.
pub fn find(resource: &GroupResource, plaintext: &[u8], max: usize) -> Vec<Hit> {
    let mut hits = Hits::new(max);
    if max == 0 {
        return hits.into_vec();
    }
    let bearing = bearing(resource);
    let triggers = triggers(plaintext);
    if triggers == 0 && bearing.is_none() {
        return hits.into_vec();
    }
    // A value's bytes are in the object's (JSON strings up to escapes no encoder writes in a
    // literal), so without a content literal in the object no value needs searching.
    hits.content = triggers & CONTENT_MASK != 0;
    match payload_kind(plaintext) {
        PayloadKind::Protobuf => {
            if !proto::scan(&plaintext[PROTOBUF_MAGIC.len()..], triggers, &mut hits) {
                raw_scan(plaintext, triggers, &[0; CONTENT_RULES], &mut hits);
            }
        }
        PayloadKind::Json => {
            if !json::scan(plaintext, triggers, bearing, &mut hits) {
                raw_scan(plaintext, triggers, &[0; CONTENT_RULES], &mut hits);
            }
        }
        PayloadKind::Cbor | PayloadKind::Unknown => {
            if bearing.is_some() && cbor_has_data(plaintext) {
                hits.add(OBJECT_BYTES, BEARING);
            }
            raw_scan(plaintext, triggers, &[0; CONTENT_RULES], &mut hits);
        }
    }
    hits.into_vec()
}

/// The hits so far: de-duplicated, capped, paths truncated.
struct Hits {
    max: usize,
    list: Vec<Hit>,
    seen: BTreeSet<(String, usize)>,
    /// Whether the object has a literal of a content rule: values are searched only then.
    content: bool,
}

impl Hits {
    fn new(max: usize) -> Self {
        Hits {
            max,
            list: Vec::new(),
            seen: BTreeSet::new(),
            content: true,
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= self.max
    }

    fn add(&mut self, path: &str, rule: usize) {
        if self.full() {
            return;
        }
        let path = match path.char_indices().nth(MAX_PATH) {
            Some((i, _)) => &path[..i],
            None => path,
        };
        if self.seen.insert((path.to_string(), rule)) {
            self.list.push(Hit {
                path: path.to_string(),
                rule: RULES[rule].name.to_string(),
            });
        }
    }

    /// Adds one hit at `path` per content rule that matched `counts`.
    fn add_counts(&mut self, path: &str, counts: &[u32; CONTENT_RULES]) {
        for (rule, &n) in counts.iter().enumerate() {
            if n > 0 {
                self.add(path, rule);
            }
        }
    }

    fn into_vec(self) -> Vec<Hit> {
        self.list
    }
}

/// Reports, at [`OBJECT_BYTES`], each content rule that matches `raw` more often than in the
/// values already reported at their own paths (`counted`): a match outside every walked field.
fn raw_scan(raw: &[u8], triggers: u32, counted: &[u32; CONTENT_RULES], hits: &mut Hits) {
    if hits.full() {
        return;
    }
    let counts = content_counts(raw, triggers);
    for rule in 0..CONTENT_RULES {
        if counts[rule] > counted[rule] {
            hits.add(OBJECT_BYTES, rule);
        }
    }
}

/// Runs the content rules on one value and reports them, and `named` (a secret-looking name
/// over a non-empty value), at `path()`, built only for a hit; returns the counts for
/// [`raw_scan`]'s accounting.
fn check_value(
    hits: &mut Hits,
    value: &[u8],
    named: bool,
    path: impl FnOnce() -> String,
) -> [u32; CONTENT_RULES] {
    let counts = if hits.content {
        content_counts(value, triggers(value))
    } else {
        [0; CONTENT_RULES]
    };
    let named = named && !value.is_empty();
    if named || counts.iter().any(|&n| n > 0) {
        let path = path();
        if named {
            hits.add(&path, FIELD_NAME);
        }
        hits.add_counts(&path, &counts);
    }
    counts
}

/// Whether a CBOR object has a non-empty `data` or `stringData`: the text key followed by a
/// non-empty map, array or string. Approximate (any depth), for secret-bearing resources only.
fn cbor_has_data(plaintext: &[u8]) -> bool {
    let non_empty = |b: Option<&u8>| matches!(b, Some(0x61..=0x7f | 0x81..=0x9f | 0xa1..=0xbf));
    [&b"\x64data"[..], b"\x6astringData"].iter().any(|key| {
        plaintext
            .windows(key.len())
            .enumerate()
            .any(|(i, w)| w == *key && non_empty(plaintext.get(i + key.len())))
    })
}

/// A name such as `password`, `DB_PASSWORD`, `apiKey` or `aws.secret-access-key`; not a
/// reference to one (`secretName`, `existingSecret`, `passwordSecretRef`, `tokenUrl`).
fn secret_name(name: &[u8]) -> bool {
    const EQUALS: &[&[u8]] = &[
        b"password",
        b"passwd",
        b"token",
        b"secret",
        b"apikey",
        b"privatekey",
        b"secretkey",
        b"accesskey",
        b"clientsecret",
        b"credentials",
        b"authtoken",
        b"bearertoken",
        b"secretaccesskey",
    ];
    const ENDS: &[&[u8]] = &[
        b"password",
        b"passwd",
        b"apikey",
        b"privatekey",
        b"secretkey",
        b"accesskey",
        b"clientsecret",
        b"accesstoken",
        b"authtoken",
        b"bearertoken",
        b"refreshtoken",
        b"apitoken",
    ];
    // Compared from the end, normalising on the fly: most names fail at their last letter.
    let normalised = || {
        name.iter()
            .rev()
            .filter(|b| !matches!(b, b'_' | b'-' | b'.'))
            .map(u8::to_ascii_lowercase)
    };
    let Some(last) = normalised().next() else {
        return false;
    };
    let ends = |word: &[u8]| {
        let mut n = normalised();
        word.iter().rev().all(|&c| n.next() == Some(c))
    };
    let equals = |word: &[u8]| {
        let mut n = normalised();
        word.iter().rev().all(|&c| n.next() == Some(c)) && n.next().is_none()
    };
    let candidates =
        |words: &'static [&'static [u8]]| words.iter().filter(move |w| w.last() == Some(&last));
    candidates(ENDS).any(|w| ends(w)) || candidates(EQUALS).any(|w| equals(w))
}
